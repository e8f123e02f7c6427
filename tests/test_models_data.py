"""labkit.data and labkit.models: offline loaders, the quality metrics, the shipped checkpoints."""
import hashlib
import json
import re

import numpy as np
import pytest
import torch

from labkit import data, models


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Every loader must work with the hub switched off, as on a cluster compute node.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_gpt():
    return models.load_tiny_gpt()


def test_corpus_splits_match_their_provenance():
    prov = data.provenance("corpus")
    for split in data.SPLITS:
        text = data.load_corpus(split)
        entry = prov["files"][f"kjv-{split}.txt.xz"]
        assert hashlib.sha256(text.encode()).hexdigest() == entry["sha256_of_text"]
        assert len(re.findall(r"^\S.* \d+$", text, flags=re.M)) == entry["chapters"]
    train, heldout = data.load_corpus("train"), data.load_corpus("heldout")
    assert train.startswith("Genesis 1\nIn the beginning God created the heaven and the earth.")
    heads = lambda t: set(re.findall(r"^\S.* \d+$", t, flags=re.M))  # noqa: E731
    assert not heads(train) & heads(heldout)  # no held-out chapter is trained on
    with pytest.raises(ValueError, match="split"):
        data.load_corpus("test")


def test_fashion_mnist_subset():
    ds = data.load_fashion_mnist()
    assert ds.x_train.shape == (12000, 28, 28) and ds.x_test.shape == (2000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and len(ds.classes) == 10
    assert (np.bincount(ds.y_train) == 1200).all() and (np.bincount(ds.y_test) == 200).all()
    x, y = ds.tensors("test")
    assert x.shape == (2000, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64
    with pytest.raises(ValueError, match="split"):
        ds.tensors("valid")


def test_digits_fallback():
    ds = data.load_digits()
    assert ds.x_train.shape[1:] == (8, 8) and len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255


def test_missing_files_name_the_command(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="scripts/train_tiny_gpt.py"):
        models.load_tiny_gpt(tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/train_cnn.py"):
        models.load_cnn(tmp_path)
    monkeypatch.setattr(data, "DATA", tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/make_corpus.py"):
        data.load_corpus("train")
    with pytest.raises(FileNotFoundError, match="scripts/make_fashion_mnist.py"):
        data.load_fashion_mnist()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    from transformers import GPT2Config, GPT2LMHeadModel
    _, tok = models.load_tiny_gpt()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied LM head: every logit is 0
    text = "And God said, Let there be light: and there was light. " * 5
    assert models.perplexity(model, tok, text) == pytest.approx(len(tok), rel=1e-5)
    with pytest.raises(ValueError, match="window"):
        models.perplexity(model, tok, text, window=33)
    with pytest.raises(ValueError, match="text"):
        models.perplexity(model, tok, "")


def test_unigram_perplexity_known_answers():
    assert models.unigram_perplexity([0, 0, 1, 1], [0, 1, 1], vocab_size=2) == pytest.approx(2.0)
    # add-one smoothing: counts [3+1, 1+1, 0+1, 0+1] / 8 -> p(0) = 1/2
    assert models.unigram_perplexity([0, 0, 0, 1], [0, 0], vocab_size=4) == pytest.approx(2.0)


def test_tiny_gpt_beats_unigram_and_writes_recognisable_text(tiny_gpt):
    model, tok = tiny_gpt
    assert 3e6 < sum(p.numel() for p in model.parameters()) < 6e6
    heldout = data.load_corpus("heldout")
    ppl = models.perplexity(model, tok, heldout, max_tokens=4096)
    ids = torch.tensor(tok(heldout)["input_ids"][:4096])
    T = model.config.n_positions
    predicted = torch.cat([ids[s + 1:s + T] for s in range(0, len(ids) - 1, T)])
    train_ids = tok(data.load_corpus("train")[:500_000])["input_ids"]
    uni = models.unigram_perplexity(train_ids, predicted, len(tok))
    assert ppl < uni / 5, f"model {ppl:.1f} vs unigram {uni:.1f}"
    torch.manual_seed(0)
    out = model.generate(**tok("And the LORD said unto Moses,", return_tensors="pt"), max_new_tokens=40,
                         do_sample=True, top_k=40, pad_token_id=tok.eos_token_id)
    words = re.findall(r"[A-Za-z]+", tok.decode(out[0]))[6:]
    known = set(re.findall(r"[A-Za-z]+", data.load_corpus("train")))
    assert len(words) >= 15 and sum(w in known for w in words) / len(words) >= 0.9, words


def test_tiny_gpt_provenance_records_the_figures(tiny_gpt):
    prov = data.provenance("tiny_gpt")
    assert prov["heldout_perplexity"] < prov["unigram_heldout_perplexity"] / 5
    assert prov["parameters"] == sum(p.numel() for p in tiny_gpt[0].parameters())
    assert prov["command"].startswith("python scripts/train_tiny_gpt.py")
    log = [json.loads(line) for line in (models.TINY_GPT_DIR / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 3


def test_minilm_embeddings_match_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    model, tok = models.load_minilm()
    assert 22e6 < sum(p.numel() for p in model.parameters()) < 23e6
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today.",
                 "Quantization stores weights in fewer bits."]
    ours = models.embed(model, tok, sentences, batch_size=3)
    ref = torch.from_numpy(SentenceTransformer(str(models.minilm_path()), device="cpu").encode(sentences))
    assert ours.shape == (4, 384)
    assert models.cosine_similarity(ours, ref).min() > 0.9999
    assert torch.allclose(ours.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = ours @ ours.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # related sentences are closer than unrelated ones
    with pytest.raises(ValueError, match="sentences"):
        models.embed(model, tok, "not a list")
    with pytest.raises(ValueError, match="shape"):
        models.cosine_similarity(ours, ours[:2])


def test_cnn_reaches_its_accuracy_on_the_test_set():
    x, y = data.load_fashion_mnist().tensors("test")
    acc = models.accuracy(models.load_cnn(), x, y)
    assert acc >= 0.85
    assert acc == pytest.approx(data.provenance("cnn")["test_accuracy"], abs=1e-4)


def test_accuracy_known_answers():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([0.0, 1.0, 0.0]).expand(len(x), 3)  # always class 1
    y = torch.tensor([1, 1, 0, 2, 1])
    assert models.accuracy(Constant(), torch.zeros(5, 4), y, batch_size=2) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="equal length"):
        models.accuracy(Constant(), torch.zeros(4, 4), y)
