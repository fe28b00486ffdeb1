"""Implicit neural representation of images: a CNN + latent self-attention encoder and a
SCENT-style decoder queried at every pixel coordinate (perceiver building blocks)."""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import einsum, nn


def exists(val):
    return val is not None


def default(val, d):
    return val if exists(val) else d


class PreNorm(nn.Module):
    def __init__(self, dim, fn, context_dim=None):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if exists(context_dim) else None

    def forward(self, x, **kwargs):
        x = self.norm(x)
        if exists(self.norm_context):
            kwargs["context"] = self.norm_context(kwargs["context"])
        return self.fn(x, **kwargs)


class GEGLU(nn.Module):
    def forward(self, x):
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = default(context_dim, query_dim)
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Linear(inner_dim, query_dim)

    def forward(self, x, context=None):
        h = self.heads
        q = self.to_q(x)
        context = default(context, x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = map(lambda t: rearrange(t, "b n (h d) -> (b h) n d", h=h), (q, k, v))
        sim = einsum("b i d, b j d -> b i j", q, k) * self.scale
        attn = sim.softmax(dim=-1)
        attn = self.dropout(attn)
        out = einsum("b i j, b j d -> b i d", attn, v)
        out = rearrange(out, "(b h) n d -> b n (h d)", h=h)
        return self.to_out(out)


class FourierFeatures(nn.Module):
    def __init__(self, num_bands=16, max_freq=10.0):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(1.0, max_freq / 2, num_bands) * math.pi)

    def forward(self, coords):
        # coords: [B, N, 2] in [-1, 1] -> [B, N, 4 * num_bands]
        x = coords.unsqueeze(-1) * self.freqs
        return rearrange(torch.cat([x.sin(), x.cos()], dim=-1), "b n c f -> b n (c f)")


class LatentEncoder(nn.Module):
    def __init__(self, channels=3, hidden_dim=512, heads=8, dim_head=64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, hidden_dim // 4, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden_dim // 4, hidden_dim, 3, padding=1),
        )
        self.attn = PreNorm(hidden_dim, Attention(hidden_dim, heads=heads, dim_head=dim_head))
        self.ff = PreNorm(hidden_dim, FeedForward(hidden_dim))

    def forward(self, img):
        x = rearrange(self.conv(img), "b d h w -> b (h w) d")  # 16 x 16 = 256 latent tokens
        x = x + self.attn(x)
        x = x + self.ff(x)
        return x.mean(dim=1)


class ScentDecoder(nn.Module):
    def __init__(self, hidden_dim=512, image_size=32, channels=3):
        super().__init__()
        self.num_queries = image_size * image_size
        self.fourier = nn.ModuleList([FourierFeatures(16, 10.0), FourierFeatures(16, 64.0)])
        # one block per frequency scale
        self.bandwidth_lins = nn.ModuleList([
            nn.Sequential(
                nn.Linear(64, 512),
                nn.ReLU(),
                PreNorm(512, Attention(512, heads=8, dim_head=64)),
                PreNorm(512, FeedForward(512, mult=4)),
            )
            for _ in range(2)
        ])
        self.modulation = nn.Linear(hidden_dim, 512)
        self.to_rgb = nn.Sequential(nn.LayerNorm(512), nn.Linear(512, channels))

    def forward(self, latent, coords):
        # latent: [B, hidden_dim], coords: [B, N, 2] with N = image_size ** 2 query positions
        h = self.modulation(latent).unsqueeze(1)
        for fourier, block in zip(self.fourier, self.bandwidth_lins, strict=True):
            h = h + block(fourier(coords))  # self-attention across all N queries
        return self.to_rgb(h)


class ImplicitImageModel(nn.Module):
    def __init__(self, image_size=32, channels=3, hidden_dim=512, heads=8, dim_head=64):
        super().__init__()
        self.image_size = image_size
        self.encoder = LatentEncoder(channels, hidden_dim, heads, dim_head)
        self.decoder = ScentDecoder(hidden_dim, image_size, channels)

    def forward(self, img):
        B, C, H, W = img.shape
        axis = torch.linspace(-1.0, 1.0, self.image_size, device=img.device)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)
        coords = grid.reshape(1, H * W, 2).expand(B, -1, -1)
        recon = self.decoder(self.encoder(img), coords)  # [B, H * W, C]
        return F.mse_loss(recon, rearrange(img, "b c h w -> b (h w) c"))
