"""Train one of the models on synthetic batches: python src/train.py eeg (run from examples/)."""

import argparse
from types import SimpleNamespace

import torch
import yaml
from brain_lm import BrainConfig, BrainLM
from celestial import CelestialPGAT
from eeg_pe import DynamicPEGNN
from inr_decoder import ImplicitImageModel
from torch.nn import functional as F

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

CONFIGS = {
    "eeg": "configs/eeg.yaml",
    "celestial": "configs/celestial.yaml",
    "inr": "configs/inr.yaml",
    "lm": "configs/lm.yaml",
}


def to_namespace(node):
    if isinstance(node, dict):
        return SimpleNamespace(**{key: to_namespace(value) for key, value in node.items()})
    return node


def load_config(path):
    with open(path) as f:
        raw = yaml.safe_load(f)
    return raw, to_namespace(raw)


def build(name, cfg):
    if name == "eeg":
        return DynamicPEGNN(
            num_nodes=cfg.graph.num_nodes, d_model=cfg.model.d_model, n_heads=cfg.model.n_heads,
            pe_dim=cfg.graph.pe_dim, num_gnn_layers=cfg.model.num_gnn_layers,
            num_classes=cfg.data.num_classes, use_dynamic_pe=cfg.graph.use_dynamic_pe,
            semi_dynamic_interval=cfg.graph.semi_dynamic_interval, dropout=cfg.model.dropout)
    if name == "celestial":
        return CelestialPGAT(
            enc_in=cfg.data.enc_in, num_nodes=cfg.graph.num_nodes, seq_len=cfg.data.seq_len,
            d_model=cfg.model.d_model, n_heads=cfg.model.n_heads, fusion_layers=cfg.model.fusion_layers,
            dropout=cfg.model.dropout, c_out=cfg.model.c_out)
    if name == "inr":
        return ImplicitImageModel(
            image_size=cfg.data.image_size, channels=cfg.data.channels, hidden_dim=cfg.model.hidden_dim,
            heads=cfg.model.heads, dim_head=cfg.model.dim_head)
    return BrainLM(BrainConfig(**vars(cfg.model)))


def synthetic_batch(name, cfg, batch_size, device):
    if name == "eeg":
        x = torch.randn(batch_size, cfg.data.num_timesteps, cfg.graph.num_nodes, device=device)
        return x, torch.randint(0, cfg.data.num_classes, (batch_size,), device=device)
    if name == "celestial":
        T, N = cfg.data.seq_len, cfg.graph.num_nodes
        x = torch.randn(batch_size, T, N, cfg.data.enc_in, device=device)
        edges = torch.rand(batch_size, T, N, N, device=device)
        return (x, edges), torch.randn(batch_size, N, cfg.model.c_out, device=device)
    if name == "inr":
        size = cfg.data.image_size
        return torch.rand(batch_size, cfg.data.channels, size, size, device=device), None
    idx = torch.randint(0, cfg.model.vocab_size, (batch_size, cfg.model.max_seq_length + 1), device=device)
    return idx[:, :-1], idx[:, 1:]


def compute_loss(name, model, inputs, targets):
    if name == "eeg":
        return F.cross_entropy(model(inputs), targets)
    if name == "celestial":
        return F.mse_loss(model(*inputs), targets)
    if name == "inr":
        return model(inputs)
    return model(inputs, targets)[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    raw, cfg = load_config(CONFIGS[args.model])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(args.model, cfg).to(device)
    optimizer = OPTIMIZERS[cfg.optimizer](
        model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    batch_size = raw["training"]["batch_size"]

    model.train()
    for step in range(args.steps):
        inputs, targets = synthetic_batch(args.model, cfg, batch_size, device)
        loss = compute_loss(args.model, model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
