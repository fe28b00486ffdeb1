"""NeuroGen-style brain-inspired language model: token embeddings, a stack of cortical
columns, and a "Broca" decoder that expands to output_dim before projecting to the vocabulary."""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class BrainConfig:
    vocab_size: int = 32000
    embedding_dim: int = 2048  # quadrupled
    max_seq_length: int = 512
    output_dim: int = 32768  # MAXIMALLY SCALED
    num_columns: int = 4
    dropout: float = 0.1


class CorticalColumn(nn.Module):
    """Causal depthwise mixing over time followed by a gated projection, with a residual."""

    def __init__(self, dim, kernel_size=4, dropout=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1)
        self.gate = nn.Linear(dim, 2 * dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        T = x.size(1)
        h = self.mix(self.norm(x).transpose(1, 2))[..., :T].transpose(1, 2)
        a, b = self.gate(h).chunk(2, dim=-1)
        return x + self.drop(a * torch.sigmoid(b))


class BrocaDecoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.expand = nn.Linear(config.embedding_dim, config.output_dim)
        self.decoder = nn.Linear(config.output_dim, config.vocab_size)

    def forward(self, x):
        return self.decoder(F.gelu(self.expand(x)))


class BrainLM(nn.Module):
    def __init__(self, config: BrainConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.position_embedding = nn.Embedding(config.max_seq_length, config.embedding_dim)
        self.columns = nn.ModuleList([
            CorticalColumn(config.embedding_dim, dropout=config.dropout) for _ in range(config.num_columns)
        ])
        self.norm = nn.LayerNorm(config.embedding_dim)
        self.broca = BrocaDecoder(config)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(pos)
        for column in self.columns:
            x = column(x)
        logits = self.broca(self.norm(x))  # [B, T, vocab_size]
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
