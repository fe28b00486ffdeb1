"""Joint spatio-temporal attention over T x N tokens through F.scaled_dot_product_attention:
the flash / memory-efficient kernels never keep a [B, H, T*N, T*N] score matrix."""

import torch
import torch.nn.functional as F
from torch import nn


class SpatioTemporalSDPA(nn.Module):
    def __init__(self, d_model, seq_len, num_nodes, n_heads=8, dropout=0.1):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.time_embed = nn.Parameter(torch.zeros(1, seq_len, 1, d_model))
        self.node_embed = nn.Parameter(torch.zeros(1, 1, num_nodes, d_model))
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * n_heads * self.head_dim)
        self.out_proj = nn.Linear(n_heads * self.head_dim, d_model)

    def forward(self, x):
        # x: [B, seq_len, num_nodes, d_model]
        B, T, N, D = x.shape
        x = x + self.time_embed[:, :T] + self.node_embed
        tokens = self.norm(x).reshape(B, T * N, D)
        qkv = self.qkv(tokens).view(B, T * N, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T*N, head_dim]
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, T * N, -1)
        return x + self.out_proj(out).view(B, T, N, D)
