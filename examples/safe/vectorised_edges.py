"""Edge combiner that processes every timestep in one call instead of a Python loop over
seq_len: no per-step list, no torch.stack copy."""

import torch
from torch import nn


class VectorisedGraphCombiner(nn.Module):
    def __init__(self, num_nodes, d_model):
        super().__init__()
        self.num_nodes = num_nodes
        self.edge_proj = nn.Linear(3, d_model)  # astronomical, learned, attention edges
        self.context_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.gate = nn.Linear(d_model, d_model)

    def forward(self, astronomical_edges, learned_edges, attention_edges, enc_out):
        # edges: [B, seq_len, N, N], enc_out: [B, seq_len, d_model] -> [B, seq_len, N, N, d_model]
        edge_types = torch.stack([astronomical_edges, learned_edges, attention_edges], dim=-1)
        edges = self.edge_proj(edge_types) + self.context_proj(enc_out)[:, :, None, None, :]
        edges = self.norm(edges)
        return edges * torch.sigmoid(self.gate(edges))
