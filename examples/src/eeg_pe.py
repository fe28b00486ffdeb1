"""Seizure detection on 19-channel EEG: TCN front end, GNN with a dynamic Laplacian
positional encoding (one graph per timestep), bidirectional GRU over time."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DynamicPEGNN(nn.Module):
    def __init__(self, num_nodes, d_model=64, n_heads=4, pe_dim=8, num_gnn_layers=2, num_classes=2,
                 use_dynamic_pe=True, semi_dynamic_interval=1, dropout=0.1):
        super().__init__()
        self.num_nodes = num_nodes
        self.d_model = d_model
        self.pe_dim = pe_dim
        self.use_dynamic_pe = use_dynamic_pe
        self.semi_dynamic_interval = semi_dynamic_interval
        self.tcn = nn.Sequential(
            nn.Conv1d(1, d_model, kernel_size=7, padding=3),
            nn.GELU(),
            nn.Conv1d(d_model, d_model, kernel_size=7, padding=3),
        )
        self.pe_proj = nn.Linear(pe_dim, d_model)
        self.gnn = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(num_gnn_layers)])
        self.node_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.temporal = nn.GRU(d_model, d_model, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * d_model, num_classes)

    def _encode(self, x):
        # x: [B, T, N] raw signal -> [B, T, N, D]
        B, T, N = x.shape
        h = self.tcn(x.permute(0, 2, 1).reshape(B * N, 1, T))
        return h.reshape(B, N, self.d_model, T).permute(0, 3, 1, 2)

    @staticmethod
    def _adjacency(h):
        # functional connectivity per timestep: [B, T, N, N], symmetric, in (0, 1)
        return torch.sigmoid(torch.einsum("btnd,btmd->btnm", h, h) / math.sqrt(h.size(-1)))

    @staticmethod
    def _laplacian(adj):
        d_inv_sqrt = adj.sum(-1).clamp(min=1e-6).rsqrt()
        eye = torch.eye(adj.size(-1), device=adj.device, dtype=adj.dtype)
        return eye - d_inv_sqrt.unsqueeze(-1) * adj * d_inv_sqrt.unsqueeze(-2)

    def _compute_dynamic_pe_vectorized(self, adj):
        # one eigendecomposition per graph snapshot, all B * T of them in a single call
        B, T, N, _ = adj.shape
        lap = self._laplacian(adj).reshape(B * T, N, N)
        eigvals, eigvecs = torch.linalg.eigh(lap)
        pe = eigvecs[..., 1 : self.pe_dim + 1]  # skip the trivial eigenvector
        return pe.reshape(B, T, N, self.pe_dim)

    def _compute_dynamic_pe_stepwise(self, adj):  # earlier version: one eigh call per timestep
        B, T, N, _ = adj.shape
        pes = []
        for t in range(T):
            _, eigvecs = torch.linalg.eigh(self._laplacian(adj[:, t]))
            pes.append(eigvecs[..., 1 : self.pe_dim + 1])
        return torch.stack(pes, dim=1)

    def _positional_encoding(self, adj):
        if not self.use_dynamic_pe:
            return self._compute_dynamic_pe_vectorized(adj.mean(dim=1, keepdim=True)).expand(
                -1, adj.size(1), -1, -1)
        B, T, N, _ = adj.shape
        k = self.semi_dynamic_interval
        pe = self._compute_dynamic_pe_vectorized(adj[:, ::k])  # every k-th snapshot: B x ceil(T/k) graphs
        return pe.repeat_interleave(k, dim=1)[:, : adj.size(1)]

    def _gnn_forward(self, h, adj, pe):
        B, T, N, D = h.shape
        h = h + self.pe_proj(pe)
        for lin in self.gnn:
            h = h + F.gelu(lin(adj @ h))
        x = h.reshape(B * T, N, D)
        x, _ = self.node_attn(x, x, x, need_weights=False)
        return h + x.reshape(B, T, N, D)

    def _classify(self, h):
        B, T, N, D = h.shape
        seq = h.permute(0, 2, 1, 3).reshape(B * N, T, D)
        out, _ = self.temporal(seq)
        return self.head(out.mean(dim=1).reshape(B, N, -1).mean(dim=1))

    def forward(self, x):
        h = self._encode(x)
        adj = self._adjacency(h)
        pe = self._positional_encoding(adj)
        return self._classify(self._gnn_forward(h, adj, pe))

    def forward_vectorized(self, x):
        # "memory-saving" variant from the OOM notes: PE and GNN in chunks of 120 timesteps
        node_features = self._encode(x)
        B, T, N, D = node_features.shape
        chunk_size = 120
        outputs = []
        for t_start in range(0, T, chunk_size):
            t_end = min(t_start + chunk_size, T)
            node_chunk = node_features[:, t_start:t_end]
            adj_chunk = self._adjacency(node_chunk)
            pe_chunk = self._compute_dynamic_pe_vectorized(adj_chunk)
            outputs.append(self._gnn_forward(node_chunk, adj_chunk, pe_chunk))
            # free memory explicitly
            torch.cuda.empty_cache()
        return self._classify(torch.cat(outputs, dim=1))
