"""The report model family: registry, shapes, cache consistency, boxes, tokenizer."""

from __future__ import annotations

import pytest
import torch

from training.findings import FINDINGS
from training.models import CXRModelConfig, CXRReportModel, create_model, list_models
from training.models.tokenizer import (
    BOS,
    EOS,
    FINDINGS_SECTION,
    IMPRESSION_SECTION,
    encode_report,
    token_id,
    train_report_tokenizer,
)

N_FINDINGS = len(FINDINGS)
N_LOCATABLE = sum(1 for f in FINDINGS if f.locatable)


def _tiny(**kw: object) -> CXRReportModel:
    torch.manual_seed(0)
    model = create_model(
        "cxr_tiny", num_findings=N_FINDINGS, num_locatable=N_LOCATABLE, vocab_size=97, **kw
    )
    assert isinstance(model, CXRReportModel)
    return model.eval()


def test_registry() -> None:
    assert {"cxr_tiny", "cxr_small", "cxr_base"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        create_model("resnet9000")


@pytest.mark.parametrize("views", [1, 2])
def test_forward_shapes_and_ranges(views: int) -> None:
    model = _tiny(num_views=views)
    images = torch.randn(3, views, 64, 64)
    tokens = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        probs, boxes, logits = model(images, tokens)
        memory, _, _ = model.encode(images)
    assert probs.shape == (3, N_FINDINGS)
    assert ((probs > 0) & (probs < 1)).all()
    assert boxes.shape == (3, N_LOCATABLE, 4)
    assert (boxes[..., 0] < boxes[..., 2]).all() and (boxes[..., 1] < boxes[..., 3]).all()
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert logits.shape == (3, 9, 97)
    assert memory.shape == (3, views * 16, 32)  # 64 / 2**4 = 4x4 tokens per view
    cross_keys, cross_values = model.decoder.cross_cache(memory)
    assert cross_keys.shape == cross_values.shape == (3, 2, 4, views * 16, 8)


def test_incremental_decoding_equals_full_pass() -> None:
    model = _tiny()
    images = torch.randn(2, 1, 64, 64)
    tokens = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        memory = model.encode(images)[0]
        empty = model.decoder.empty_cache(2)
        cross = model.decoder.cross_cache(memory)
        full, _, _ = model.decoder(tokens, *cross, empty, empty)
        keys, values = empty, empty
        steps = []
        for t in range(7):
            logits, keys, values = model.decoder(tokens[:, t : t + 1], *cross, keys, values)
            steps.append(logits)
    assert keys.shape == (2, 2, 4, 7, 8)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_causal_mask_future_tokens_do_not_leak() -> None:
    model = _tiny()
    memory = model.encode(torch.randn(1, 1, 64, 64))[0]
    empty = model.decoder.empty_cache(1)
    a = torch.tensor([[1, 10, 11, 12]])
    b = torch.tensor([[1, 10, 50, 60]])
    with torch.no_grad():
        cross = model.decoder.cross_cache(memory)
        la = model.decoder(a, *cross, empty, empty)[0]
        lb = model.decoder(b, *cross, empty, empty)[0]
    torch.testing.assert_close(la[:, :2], lb[:, :2])
    assert not torch.allclose(la[:, 2:], lb[:, 2:])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_locatable"):
        CXRModelConfig(num_findings=3, num_locatable=4, vocab_size=10)
    with pytest.raises(ValueError, match="vocab_size"):
        CXRModelConfig(num_findings=3, num_locatable=1, vocab_size=0)
    with pytest.raises(ValueError, match="divisible"):
        create_model("cxr_tiny", num_findings=3, num_locatable=1, vocab_size=10, image_size=70)


def test_tokenizer_keeps_spanish_accents_and_sections() -> None:
    corpus = [f"{f.name_es}. No se observa {f.name_es.lower()}." for f in FINDINGS] * 3
    tokenizer = train_report_tokenizer(corpus, vocab_size=300)
    ids = encode_report(tokenizer, "Derrame pleural en el hemitórax derecho.", "Cardiomegalia.")
    assert ids[0] == token_id(tokenizer, BOS) and ids[-1] == token_id(tokenizer, EOS)
    assert ids[1] == token_id(tokenizer, FINDINGS_SECTION)
    split = ids.index(token_id(tokenizer, IMPRESSION_SECTION))
    assert tokenizer.decode(ids[2:split]) == "Derrame pleural en el hemitórax derecho."
    with pytest.raises(ValueError, match="vocab_size"):
        train_report_tokenizer(corpus, vocab_size=3)


def test_tokenizer_encodes_any_spanish_letter_its_texts_lacked() -> None:
    tokenizer = train_report_tokenizer(["sin neumotórax.", "derrame pleural."], vocab_size=200)
    text = "Derrame pleural derecho. ¿Índice cardiotorácico? Ñ 12,5 %"
    ids = tokenizer.encode(text).ids
    assert tokenizer.token_to_id("[UNK]") not in ids
    assert tokenizer.decode(ids) == text
