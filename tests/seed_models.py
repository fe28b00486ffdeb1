"""Model sources the tests share: seed 002's spatio-temporal attention, with and without dropout, and an
attention sized from a config object (cfg.model.d_model, cfg.model.n_heads) for the config-reading tests."""

SPATIO_TEMPORAL = "\nimport math\nimport torch.nn as nn\nfrom torch.nn import functional as F\n\nclass SpatioTemporal(nn.Module):\n    def __init__(self, d_model, n_heads, dropout=0.1):\n        super().__init__()\n        self.n_heads = n_heads\n        self.head_dim = d_model // n_heads\n        self.qkv = nn.Linear(d_model, 3 * d_model)\n        self.drop = nn.Dropout(dropout)\n\n    def forward(self, x):\n        B, T, N, D = x.shape\n        tokens = x.reshape(B, T * N, D)\n        q, k, v = self.qkv(tokens).view(B, T * N, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)\n        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)\n        weights = self.drop(F.softmax(scores, dim=-1))\n        return weights @ v\n"

SPATIO_TEMPORAL_NO_DROPOUT = "\nimport math\nimport torch.nn as nn\nfrom torch.nn import functional as F\n\nclass Attn(nn.Module):\n    def __init__(self, d_model, n_heads):\n        super().__init__()\n        self.n_heads = n_heads\n        self.head_dim = d_model // n_heads\n        self.qkv = nn.Linear(d_model, 3 * d_model)\n\n    def forward(self, x):\n        B, T, N, D = x.shape\n        tokens = x.reshape(B, T * N, D)\n        q, k, v = self.qkv(tokens).view(B, T * N, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)\n        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)\n        return F.softmax(scores, dim=-1) @ v\n"

CFG_ATTENTION = """import torch.nn as nn
import torch.nn.functional as F


class Attn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.qkv = nn.Linear(cfg.model.d_model, 3 * cfg.model.d_model)
        self.h = cfg.model.n_heads

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        return (F.softmax(q @ k.transpose(-2, -1), dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
"""
