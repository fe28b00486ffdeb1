"""Celestial-enhanced PGAT: edges between 13 celestial bodies from three sources (ephemeris,
learned, attention) combined per timestep, then a joint spatio-temporal attention encoder."""

import math

import torch
from torch import nn
from torch.nn import functional as F


class CelestialGraphCombiner(nn.Module):
    def __init__(self, num_nodes, d_model):
        super().__init__()
        self.num_nodes = num_nodes
        self.d_model = d_model
        self.edge_transforms = nn.ModuleDict({
            "astronomical": nn.Linear(1, d_model),
            "learned": nn.Linear(1, d_model),
            "attention": nn.Linear(1, d_model),
        })
        self.context_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.gate = nn.Linear(d_model, d_model)

    def _transform_edges_to_features(self, astro, learned, attn):
        # each edge type [B, N, N] -> [B, N, N, d_model]
        astro_features = self.edge_transforms["astronomical"](astro.unsqueeze(-1))
        learned_features = self.edge_transforms["learned"](learned.unsqueeze(-1))
        attention_features = self.edge_transforms["attention"](attn.unsqueeze(-1))
        return astro_features + learned_features + attention_features

    def _forward_static(self, astro_t, learned_t, attn_t, context_t):
        edges = self._transform_edges_to_features(astro_t, learned_t, attn_t)
        edges = self.norm(edges + self.context_proj(context_t)[:, None, None, :])
        return edges * torch.sigmoid(self.gate(edges))

    def forward(self, astronomical_edges, learned_edges, attention_edges, enc_out):
        # edges: [B, seq_len, N, N], enc_out: [B, seq_len, d_model]
        B, seq_len, N, N2 = astronomical_edges.shape  # N2 == N: edges between every pair of bodies
        combined_edges_over_time = []
        for t in range(seq_len):
            astro_t = astronomical_edges[:, t, :, :]
            learned_t = learned_edges[:, t, :, :]
            attn_t = attention_edges[:, t, :, :]
            context_t = enc_out[:, t, :]
            combined_t = self._forward_static(astro_t, learned_t, attn_t, context_t)
            combined_edges_over_time.append(combined_t)
        return torch.stack(combined_edges_over_time, dim=1)  # [B, seq_len, N, N, d_model]


class JointSpatioTemporalEncoding(nn.Module):
    def __init__(self, d_model, seq_len, num_nodes, num_heads=8, dropout=0.1):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        inner_dim = self.head_dim * num_heads
        self.time_embed = nn.Parameter(torch.zeros(1, seq_len, 1, d_model))
        self.node_embed = nn.Parameter(torch.zeros(1, 1, num_nodes, d_model))
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * inner_dim)
        self.out_proj = nn.Linear(inner_dim, d_model)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, N, D = x.shape
        x = x + self.time_embed[:, :T] + self.node_embed
        tokens = self.norm(x).reshape(B, T * N, D)  # every (timestep, body) pair is a token
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        q = q.view(B, T * N, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T * N, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T * N, self.num_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        attn = F.softmax(scores, dim=-1)
        attn = self.attn_dropout(attn)
        out = (attn @ v).transpose(1, 2).reshape(B, T * N, -1)
        return x + self.out_proj(out).view(B, T, N, D)


class CelestialPGAT(nn.Module):
    def __init__(self, enc_in, num_nodes, seq_len, d_model=130, n_heads=8, fusion_layers=3,
                 dropout=0.1, c_out=1):
        super().__init__()
        self.embed = nn.Linear(enc_in, d_model)
        self.node_embeddings = nn.Parameter(torch.randn(num_nodes, d_model) * 0.02)
        self.combiner = CelestialGraphCombiner(num_nodes, d_model)
        self.fusion = nn.ModuleList([
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU())
            for _ in range(fusion_layers)
        ])
        self.spatiotemporal_encoder = JointSpatioTemporalEncoding(
            d_model, seq_len, num_nodes, num_heads=n_heads, dropout=dropout)
        self.projection = nn.Linear(d_model, c_out)

    def forward(self, x, astronomical_edges):
        # x: [B, seq_len, num_nodes, enc_in], astronomical_edges: [B, seq_len, num_nodes, num_nodes]
        B, T, N, _ = x.shape
        h = self.embed(x)
        learned = torch.sigmoid(self.node_embeddings @ self.node_embeddings.t())
        learned_edges = learned.expand(B, T, N, N)
        attention_edges = torch.softmax(h @ h.transpose(-2, -1) / math.sqrt(h.size(-1)), dim=-1)
        edges = self.combiner(astronomical_edges, learned_edges, attention_edges, h.mean(dim=2))
        h = h + edges.mean(dim=3)  # aggregate incoming edge features per node
        for layer in self.fusion:
            h = h + layer(h)
        h = self.spatiotemporal_encoder(h)
        return self.projection(h[:, -1])  # [B, num_nodes, c_out]
