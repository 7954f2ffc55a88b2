"""Per-layer summary of a config: type, settings, parameters, output shape.

The model is built on the meta device, so even a billion-parameter config is summarised in
moments without allocating its weights; output shapes come from a real (meta) forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig
from .flops import FlopCount, count_flops
from .model import Transformer


@dataclass
class Row:
    name: str
    kind: str
    settings: str
    params: int
    shape: tuple[int, ...]
    flops: int = 0  # forward FLOPs per token at the summary's seq_len (configaformer.flops)


@dataclass
class Summary:
    rows: list[Row]
    embedding_params: int
    total_params: int
    flops: FlopCount

    @property
    def non_embedding_params(self) -> int:
        return self.total_params - self.embedding_params


def summarize(config, batch: int = 1, seq_len: int = 128) -> Summary:
    with torch.device("meta"):
        model = Transformer(config)
    cfg: ModelConfig = model.config
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    modules = [("embedding", model.emb_proj or model.embedding)] + [(f"layers[{i}]", m) for i, m in enumerate(model.layers)]
    modules += [(f"head {n}", m) for n, m in zip(model.head_names, model.heads)]
    for name, module in modules:
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))))
    if cfg.max_seq_len is not None:
        seq_len = min(seq_len, cfg.max_seq_len)
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    flops = count_flops(cfg, seq_len)
    emb = model.embedding.weight.numel()
    rows = [Row("embedding", "Embedding", f"{cfg.vocab_size} x {cfg.emb_size}"
                + (f" -> {cfg.dim_model}" if model.emb_proj is not None else ""),
                emb + (count(model.emb_proj) if model.emb_proj is not None else 0), shapes["embedding"],
                flops.embedding)]
    if model.abs_pos is not None:
        rows.append(Row("abs_pos_emb", cfg.abs_pos_emb, f"{cfg.max_seq_len or ''} x {cfg.dim_model}".strip(" x"),
                        count(model.abs_pos), shapes["embedding"]))
    for i, (layer_cfg, layer) in enumerate(zip(cfg.layers, model.layers)):
        owner = layer_cfg.share_weights_with
        settings = layer_cfg.summary() + (f" (weights of layers[{owner}])" if owner is not None else "")
        rows.append(Row(f"layers[{i}]", layer_cfg.type, settings, 0 if owner is not None else count(layer),
                        shapes[f"layers[{i}]"], flops.layers[i]))
    if model.final_norm is not None:
        rows.append(Row("final_norm", cfg.norm_type, "", count(model.final_norm), shapes[f"layers[{len(cfg.layers) - 1}]"]))
    for head_cfg, head, name, head_flops in zip(cfg.classifiers, model.heads, model.head_names, flops.heads):
        params = sum(p.numel() for p in head.parameters() if p is not model.embedding.weight)
        settings = head_cfg.head_type + (" (shares the embedding)" if head_cfg.head_type == "tied" else "")
        rows.append(Row(f"head {name}", "Classifier", settings, params, shapes[f"head {name}"], head_flops))
    return Summary(rows, emb, model.num_parameters(), flops)
