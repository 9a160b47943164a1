"""Language encoder: local HF folders, pooling, the per-instruction cache, path errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from atlas.config.schema import LanguageEncoderConfig
from atlas.models.language import (
    LanguageEncoder,
    pool_last_token,
    pool_mean,
    resolve_language_path,
)


def _encoder(path: str | Path, pooling: str = "last_token") -> LanguageEncoder:
    cfg = LanguageEncoderConfig(name_or_path=str(path), pooling=pooling, dtype="fp32")
    enc = LanguageEncoder(cfg)
    enc.requires_grad_(False)  # frozen, as the policy does
    return enc.eval()


def test_pooling_respects_mask_on_either_padding_side() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert pool_last_token(hidden, right).flatten().tolist() == [1.0, 7.0]
    assert pool_last_token(hidden, left).flatten().tolist() == [3.0, 7.0]
    assert pool_mean(hidden, right).flatten().tolist() == [0.5, 5.5]


def test_minilm_resolves_to_the_packaged_folder() -> None:
    path = resolve_language_path("minilm")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_tiny_llama_padding_does_not_change_features(tiny_llama: Path, pooling: str) -> None:
    enc = _encoder(tiny_llama, pooling)
    short, long = "open drawer", "pick up the black bowl and place it on plate"
    both = enc._encode([short, long], torch.device("cpu"))  # padded batch
    alone = enc._encode([short], torch.device("cpu"))  # no padding
    assert both.tokens.shape[:2] == both.mask.shape and both.pooled.shape == (2, 32)
    assert both.mask[0].sum() == alone.mask[0].sum() < both.mask.shape[1]
    torch.testing.assert_close(both.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
    assert enc.model.__class__.__name__ == "LlamaModel"  # base model, no LM head


def test_frozen_encoder_caches_each_instruction_once(tiny_llama: Path) -> None:
    enc = _encoder(tiny_llama)
    calls = []
    enc.model.register_forward_hook(lambda *_: calls.append(1))
    texts = ["open drawer", "push the plate", "open drawer"]
    first = enc(texts, torch.device("cpu"))
    assert len(calls) == 1 and enc.cache_misses == 2  # one batched run for 2 distinct texts
    again = enc(texts[::-1], torch.device("cpu"))
    assert len(calls) == 1 and enc.cache_hits == 3  # all three served from the cache
    torch.testing.assert_close(again.pooled, first.pooled.flip(0))
    enc.release_model()
    assert enc.released
    enc(["push the plate"], torch.device("cpu"))  # cached: still works
    with pytest.raises(RuntimeError, match="not in the cache"):
        enc(["turn on stove"], torch.device("cpu"))


def test_wrong_paths_name_the_folder_and_missing_file(tiny_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _encoder(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").unlink()
    (broken / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="broken is missing: tokenizer.*weights"):
        _encoder(broken)
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        _encoder(broken)


def test_meta_build_without_folder_is_llama2_7b(tmp_path: Path) -> None:
    cfg = LanguageEncoderConfig(name_or_path=str(tmp_path / "Llama-2-7b-hf"))
    enc = LanguageEncoder(cfg, meta=True)
    assert sum(p.numel() for p in enc.parameters()) == 6_607_343_616
    assert all(p.is_meta for p in enc.parameters())
