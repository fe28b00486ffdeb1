"""LM head whose loss is computed over chunks of tokens under activation checkpointing: only
one chunk's [chunk, vocab_size] logits exist at a time, forward or backward."""

import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_loss(hidden, weight, targets):
    logits = F.linear(hidden, weight)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


class ChunkedLMHead(nn.Module):
    def __init__(self, d_model, vocab_size, loss_chunk_size=256):
        super().__init__()
        self.loss_chunk_size = loss_chunk_size
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, hidden, targets):
        # hidden: [B, T, d_model], targets: [B, T] -> mean token loss
        hidden = hidden.reshape(-1, hidden.size(-1))
        targets = targets.reshape(-1)
        total = hidden.new_zeros(())
        for start in range(0, hidden.size(0), self.loss_chunk_size):
            end = start + self.loss_chunk_size
            total = total + checkpoint(
                _chunk_loss, hidden[start:end], self.lm_head.weight, targets[start:end], use_reentrant=False)
        return total / targets.numel()
