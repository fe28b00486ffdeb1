"""A classification head: one small Linear from d_model to the number of classes."""

from torch import nn


class ClassifierHead(nn.Module):
    def __init__(self, d_model, num_classes, dropout=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, h):
        # h: [B, T, N, d_model] -> [B, num_classes]
        return self.fc(self.dropout(self.norm(h.mean(dim=(1, 2)))))
