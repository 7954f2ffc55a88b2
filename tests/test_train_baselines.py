"""The gzip/xz baselines beside the model's bits per byte: shown only for an evaluation text long
enough that the compressors' fixed container bytes do not dominate, and said so otherwise."""

import gzip
import lzma
from pathlib import Path

import pytest

from configaformer.train.baselines import MIN_TEXT_BYTES, compressor_bits_per_byte
from configaformer.train.cli import print_summary
from configaformer.train.loop import Summary

TEXT = b"".join(p.read_bytes() for p in sorted(Path(gzip.__file__).parent.glob("json/*.py")))


def summary(data: bytes) -> Summary:
    return Summary(Path("run"), 3, 384, 1000, {"lm": {"loss": 1.0, "bits_per_byte": 1.4}}, 100.0, 4.0, None, None,
                   None, "max_steps", compressor_bits_per_byte(data), len(data))


def test_the_threshold_is_where_the_containers_fall_under_two_percent():
    data = TEXT[:MIN_TEXT_BYTES]
    assert len(data) == MIN_TEXT_BYTES
    assert len(gzip.compress(b"", 9)) / len(gzip.compress(data, 9)) < 0.02
    xz = lambda d: len(lzma.compress(d, preset=9 | lzma.PRESET_EXTREME))  # noqa: E731
    assert xz(b"") / xz(data) < 0.02


@pytest.mark.parametrize("length", [128, MIN_TEXT_BYTES - 1])
def test_a_short_text_gets_no_baseline_and_the_summary_says_why(length, capsys):
    assert compressor_bits_per_byte(TEXT[:length]) == {}
    print_summary(summary(TEXT[:length]))
    out = capsys.readouterr().out
    assert "not shown" in out and f"{length:,} bytes" in out and "bits per byte" not in out.split("gzip / xz")[1]


def test_a_long_enough_text_gets_both_baselines(capsys):
    data = TEXT[:MIN_TEXT_BYTES]
    values = compressor_bits_per_byte(data)
    assert values == {"gzip -9": 8 * len(gzip.compress(data, 9)) / len(data),
                      "xz -9e": 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / len(data)}
    print_summary(summary(data))
    out = capsys.readouterr().out
    assert "gzip -9 on the same text" in out and "xz -9e on the same text" in out and "not shown" not in out
