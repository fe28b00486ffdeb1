"""Laplacian positional encoding recomputed every pe_interval-th timestep, under no_grad:
B * T / pe_interval small eigendecompositions and nothing saved for backward."""

import torch
from torch import nn


def normalized_laplacian(adj):
    d_inv_sqrt = adj.sum(-1).clamp(min=1e-6).rsqrt()
    eye = torch.eye(adj.size(-1), device=adj.device, dtype=adj.dtype)
    return eye - d_inv_sqrt.unsqueeze(-1) * adj * d_inv_sqrt.unsqueeze(-2)


class SparseLaplacianPE(nn.Module):
    def __init__(self, num_nodes, d_model, pe_dim=8, pe_interval=8):
        super().__init__()
        self.num_nodes = num_nodes
        self.pe_dim = pe_dim
        self.pe_interval = pe_interval
        self.proj = nn.Linear(pe_dim, d_model)

    def forward(self, adj):
        # adj: [B, T, N, N] -> [B, T, N, d_model]
        B, T, N, _ = adj.shape
        with torch.no_grad():
            snapshots = normalized_laplacian(adj[:, :: self.pe_interval]).reshape(-1, N, N)
            _, eigvecs = torch.linalg.eigh(snapshots)
            pe = eigvecs[..., 1 : self.pe_dim + 1].reshape(B, -1, N, self.pe_dim)
        pe = pe.repeat_interleave(self.pe_interval, dim=1)[:, :T]
        return self.proj(pe)
