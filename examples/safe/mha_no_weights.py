"""Temporal self-attention block with nn.MultiheadAttention. The attention weights are never
used, so they are not requested: need_weights=False keeps the fused fast path."""

import torch.nn as nn


class TemporalBlock(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d_model, d_model))

    def forward(self, x, key_padding_mask=None):
        # x: [B, seq_len, d_model]
        y = self.norm1(x)
        attn_out, _ = self.attn(y, y, y, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + attn_out
        return x + self.ff(self.norm2(x))
