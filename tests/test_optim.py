"""The optimizer's parameter groups: which parameters get weight decay (docs/blocks.md)."""

from configaformer import Transformer
from configaformer.train.optim import param_groups

from .test_model import EVERY_PARAMETER


def test_weight_decay_reaches_every_matrix_and_spares_tables_vectors_and_scalars():
    model = Transformer(EVERY_PARAMETER)
    decay, no_decay = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    attn, lazy, gmlp, _ = (layer.block for layer in model.layers)
    raw = {attn.pre_mix: True, attn.post_mix: True, gmlp.spatial_weight: True, attn.conv.conv.weight: True,
           gmlp.spatial_bias: False, attn.memory_k: False, attn.memory_v: False, lazy.memory_v: False,
           attn.rel_bias.bias.weight: False, model.abs_pos.table.weight: False, model.embedding.weight: False,
           model.layers[0].residual_scale.scale: False, model.layers[0].pre_norm.g: False}
    assert {name: id(p) in decayed for name, p in zip(range(len(raw)), raw)} == dict(enumerate(raw.values()))
    # The whole rule: matrices decay unless they are tables; every parameter is in exactly one group.
    tables = {id(model.embedding.weight), id(model.abs_pos.table.weight), id(attn.rel_bias.bias.weight),
              id(attn.memory_k), id(attn.memory_v), id(lazy.memory_v)}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2 and id(p) not in tables), name
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert model.heads[0].out.weight is model.embedding.weight  # the tied output layer is the table
