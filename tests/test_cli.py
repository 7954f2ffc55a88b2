"""The `configaformer` command: info tables, the demo, and clean errors."""

import json

from configaformer.cli import main
from configaformer.info import summarize
from configaformer.presets import list_presets, preset_path

from .conftest import ATTN, FFN, tiny


def test_info_prints_each_layer_and_totals(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(tiny([ATTN, FFN], input_emb_size=16, classifiers=[50, 3])))
    assert main(["info", str(path), "--seq-len", "7", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "layers[0]" in out and "layers[1]" in out and "[2, 7, 32]" in out and "[2, 7, 3]" in out
    summary = summarize(path)
    assert summary.embedding_params == 50 * 16
    assert f"{summary.total_params:,}" in out and f"{summary.non_embedding_params:,}" in out


def test_info_parameter_rows_add_up_to_the_total():
    summary = summarize(preset_path("seed"))
    assert sum(row.params for row in summary.rows) == summary.total_params
    assert summary.total_params == 180_549_975  # the seed example, computed without allocating it


def test_info_on_preset_name_and_bad_inputs(tmp_path, capsys):
    assert main(["info", "seed"]) == 0
    assert "layers[23]" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tiny([dict(ATTN, num_heads=5)])))
    assert main(["info", str(bad)]) == 2
    assert "layers[0].num_heads" in capsys.readouterr().err


def test_an_unknown_name_is_one_line_naming_the_argument_and_listing_the_names(tmp_path, capsys):
    """`info CONFIG`, `train RUN` and a run file's `model:` share one resolver (presets.locate)."""
    assert main(["info", "no-such-thing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("configaformer: config: 'no-such-thing' is neither a file nor "
                                                   f"a preset name (presets: {', '.join(list_presets())})")
    assert {"gpt2", "llama", "moe"} <= set(list_presets())
    assert main(["train", "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("configaformer: run: 'no-such-run' is neither a file nor a "
                                                   "named run (named runs: stdlib")
    run = tmp_path / "run.yaml"
    run.write_text("model: lama\ndata: {path: nowhere}\n")
    assert main(["train", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("configaformer: model: 'lama' is neither a file nor a preset "
                                                   f"name (presets: {', '.join(list_presets())})")


def test_demo_runs_the_seed_example(capsys):
    assert main(["demo", "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "logits [1, 8, 50257]" in out and "logits [1, 8, 6]" in out


def test_info_rows_add_up_with_positions_and_shared_layers():
    config = tiny([ATTN, FFN, dict(ATTN, share_weights_with=0)], abs_pos_emb="learned", max_seq_len=64)
    summary = summarize(config)
    assert sum(row.params for row in summary.rows) == summary.total_params
    shared = [row for row in summary.rows if row.name == "layers[2]"][0]
    assert "weights of layers[0]" in shared.settings and shared.params == 0
    assert [row.name for row in summary.rows][:2] == ["embedding", "abs_pos_emb"] and summary.rows[1].params == 64 * 32
