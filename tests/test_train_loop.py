"""The training loop on a tiny model: it learns, samples every lookahead, skips non-finite steps,
resumes bit-exactly, and the CLI commands train, resume and fine-tune end to end."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
import torch

import babelcast
from babelcast.checkpoint.nemo_archive import read_nemo
from babelcast.cli import main
from babelcast.train.config import parse_train_config
from babelcast.train.run import trainer_from_scratch
from babelcast.train.tokenizer import tags_in, train_tokenizer

from train_fixtures import make_trainer, one_thread, tiny_train_config, write_manifest  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    return write_manifest(root / "train", 16, seed=1), write_manifest(root / "val", 4, seed=2)


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def save_another_tokenizer(out_dir) -> None:
    """OUT_DIR/tokenizer of a run whose tokenizer is not the tiny runs' (trained on other text)."""
    texts = [f"{t} <en-US>" for t in ("Kalo mine sutari.", "Pode anka lomi.", "Rita sune kapo!")] * 50
    train_tokenizer(texts, 40, tags_in(texts)).save(out_dir / "tokenizer")


def test_training_lowers_the_loss_and_samples_every_lookahead(manifests, tmp_path):
    trainer = make_trainer(manifests, tmp_path / "run", max_steps=24)
    seen = Counter()
    trainer.model.encoder.register_forward_pre_hook(lambda m, args: seen.update([tuple(args[2:4])]))
    progress = trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 24 and progress.step == 24 and progress.skipped_steps == 0
    assert sum(losses[-6:]) / 6 < 0.8 * sum(losses[:6]) / 6
    assert set(seen) == set(trainer.model.cfg.encoder.att_contexts)  # multi-lookahead training
    steps = [r for r in log if "loss" in r]
    assert all("ctc_per_token" not in r for r in steps)  # no CTC head
    # The loss per utterance over the transcripts' tokens, whatever the batch (one per step here).
    assert all(0 < r["rnnt_per_token"] < r["loss"] for r in steps)
    assert babelcast.load_model(tmp_path / "run" / "model.nemo").tokenizer is not None


def test_non_finite_gradients_skip_the_step(manifests, tmp_path):
    trainer = make_trainer(manifests, tmp_path / "run", max_steps=1)
    before = weights(trainer)
    handle = trainer.model.joint.enc.weight.register_hook(lambda g: g * float("nan"))
    stats = trainer.train_step(trainer._batches())
    handle.remove()
    assert stats.skipped and trainer.progress.skipped_steps == 1 and trainer.progress.step == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert all(p.grad is None for p in trainer.model.parameters())
    assert not trainer.train_step(trainer._batches()).skipped


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_bit_exactly(manifests, tmp_path, ema_decay):
    straight = make_trainer(manifests, tmp_path / "a", max_steps=5, accumulate=2, ema_decay=ema_decay)
    straight.fit()
    first = make_trainer(manifests, tmp_path / "b", max_steps=2, accumulate=2, ema_decay=ema_decay)
    first.fit()
    second = make_trainer(manifests, tmp_path / "b", max_steps=5, accumulate=2, ema_decay=ema_decay)
    assert second.resume() and second.progress.step == 2
    second.fit()
    assert second.progress.batch_in_epoch == straight.progress.batch_in_epoch
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    exported = read_nemo(tmp_path / "b" / "model.nemo").state_dict  # the weight average, when there is one
    for key, value in read_nemo(tmp_path / "a" / "model.nemo").state_dict.items():
        assert torch.equal(value, exported[key]), key


def test_ema_decay_exports_the_average_of_the_weights(manifests, tmp_path):
    """trainer.ema_decay: validation and model.nemo see the exponential moving average of the weights after
    each step (decay min(d, (1 + n) / (10 + n)) at update n), model-raw.nemo the trained weights."""
    trainer = make_trainer(manifests, tmp_path, max_steps=3, ema_decay=0.25, val_every=3)
    names = [name for name, _ in trainer.model.named_parameters()]
    expected = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    batches = trainer._batches()
    for n in (1, 2, 3):
        assert not trainer.train_step(batches).skipped
        decay = min(0.25, (1 + n) / (10 + n))
        for name, p in trainer.model.named_parameters():
            expected[name] = decay * expected[name] + (1 - decay) * p.detach()
    trained = weights(trainer)
    trainer._export_latest()
    averaged, raw = read_nemo(tmp_path / "model.nemo").state_dict, read_nemo(tmp_path / "model-raw.nemo").state_dict
    for name in names:
        assert torch.allclose(averaged[name], expected[name], rtol=1e-6, atol=1e-7), name
        assert torch.equal(raw[name], trained[name]), name
    assert any(not torch.equal(averaged[name], trained[name]) for name in names)
    assert all(torch.equal(v, trained[k]) for k, v in trainer.model.state_dict().items())  # its own weights again
    trainer.validate()  # on the average too: the first validation exports best.nemo
    assert all(torch.equal(read_nemo(tmp_path / "best.nemo").state_dict[name], averaged[name]) for name in names)
    assert all(torch.equal(v, trained[k]) for k, v in trainer.model.state_dict().items())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="trainer.ema_decay"):
            make_trainer(manifests, tmp_path / "bad", ema_decay=bad)


def test_resume_refuses_another_model(manifests, tmp_path):
    make_trainer(manifests, tmp_path / "run", max_steps=1).fit()
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path / "run", max_steps=2)
    raw["model"]["encoder"]["n_layers"] = 3
    with pytest.raises(ValueError, match="another model config"):
        trainer_from_scratch(parse_train_config(raw)).resume()


def test_bf16_hybrid_step_and_validation(manifests, tmp_path):
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path / "run", max_steps=1, precision="bf16", joint_chunk=2)
    raw["model"]["aux_ctc"] = {"ctc_loss_weight": 0.3}
    trainer = trainer_from_scratch(parse_train_config(raw))
    assert trainer.model.ctc_decoder is not None
    stats = trainer.train_step(trainer._batches())
    assert torch.isfinite(torch.tensor(stats.loss)) and not stats.skipped
    assert stats.ctc_per_token > 0 and stats.rnnt_per_token > 0
    result = trainer.validate()
    assert result.words > 0 and result.wer >= 0 and (tmp_path / "run" / "best.nemo").is_file()
    assert read_nemo(tmp_path / "run" / "best.nemo").config["target"].endswith("HybridRNNTCTCBPEModelWithPrompt")
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1]
    assert len(logged["val_time_variation"]) == len(trainer.model.encoder.layers)
    assert all(0 < v < 1 for v in logged["val_time_variation"]) and logged["val_examples"]


def test_time_variation_sees_a_collapsed_encoder_and_ignores_padding():
    """0 when every frame is the same vector, near 1 for frames independent over time; padding ignored."""
    from babelcast.train.validate import time_variation

    gen = torch.Generator().manual_seed(0)
    constant = torch.randn(1, 1, 16, generator=gen).expand(1, 40, 16)
    noise = torch.randn(1, 40, 16, generator=gen)
    frames = torch.cat([constant, noise]).clone()
    frames[:, 30:] = 1e3  # padding
    lengths = torch.tensor([30, 30])
    v = time_variation(frames, lengths)
    assert v[0] < 1e-4 and 0.9 < v[1] <= 1.0
    assert torch.allclose(v, time_variation(frames[:, :30], lengths))


def test_cli_train_resume_and_finetune(manifests, tmp_path, capsys):
    import yaml

    train, val = manifests
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(train, val, tmp_path / "run", max_steps=2)))
    assert main(["train", str(config)]) == 0
    assert main(["train", str(config), "--max-steps", "3"]) == 0
    assert "resuming" in capsys.readouterr().err
    base = tmp_path / "run" / "model.nemo"
    out = tmp_path / "ft.nemo"
    assert main(["finetune", "--model", str(base), "--train", str(train), "--val", str(val), "--lang", "de-DE",
                 "--steps", "2", "--lr", "1e-3", "--precision", "fp32", "--out", str(out)]) == 0
    tuned, original = read_nemo(out), read_nemo(base)
    assert tuned.config == original.config and tuned.artifacts == original.artifacts
    changed = [k for k, v in tuned.state_dict.items() if not torch.equal(v, original.state_dict[k])]
    assert changed and "encoder.layers.0.self_attn.linear_q.weight" in changed
    assert (tmp_path / "ft.train" / "last.pt").is_file()
    assert babelcast.load_model(out).transcribe([torch.zeros(8000).numpy()])[0].text is not None
    # The same fine-tune from another base (same config, other weights) does not resume the old run: it
    # would silently give the old base's fine-tune. One line names the problem and the fix.
    capsys.readouterr()
    assert main(["finetune", "--model", str(out), "--train", str(train), "--val", str(val), "--lang", "de-DE",
                 "--steps", "2", "--precision", "fp32", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "started from another model (sha256:" in err and "model.nemo, not sha256:" in err and "--no-resume" in err
    # The same base under another name resumes: only the weights count.
    copy = tmp_path / "base-copy.nemo"
    copy.write_bytes(base.read_bytes())
    assert main(["finetune", "--model", str(copy), "--train", str(train), "--val", str(val), "--lang", "de-DE",
                 "--steps", "2", "--precision", "fp32", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().err


def test_config_errors_name_the_key(manifests, tmp_path):
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path)
    with pytest.raises(ValueError, match="trainer: unknown key"):
        parse_train_config({**raw, "trainer": {**raw["trainer"], "max_stepz": 3}})
    with pytest.raises(ValueError, match="optim.schedule"):
        parse_train_config({**raw, "optim": {"schedule": "linear"}})
    cfg = parse_train_config(raw)
    assert replace(cfg.trainer, max_steps=9).max_steps == 9


def test_tokenizer_extra_texts_give_a_language_its_tag_without_training_on_it(manifests, tmp_path):
    """tokenizer.extra_texts: a language to fine-tune later gets its letters and tag piece, while
    the training utterances stay those of data.train."""
    from babelcast.checkpoint.tokenizer import Tokenizer
    from babelcast.config import parse_model_config
    from babelcast.train.run import prepare_tokenizer, training_texts, with_vocab

    extra = write_manifest(tmp_path / "extra", 6, seed=5, langs=("es-US",))
    lines = [json.loads(x) for x in extra.read_text(encoding="utf-8").splitlines()]
    for i, line in enumerate(lines):
        line["text"] = f"Ação número {i}, coração."  # letters no training transcript has
    extra.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    raw = tiny_train_config(manifests[0], None, tmp_path / "run")
    raw["tokenizer"]["extra_texts"] = [str(extra)]
    cfg = parse_train_config(raw)
    prompt = parse_model_config(with_vocab(cfg.model, 1)).prompt
    texts = training_texts(cfg, prompt)
    assert sum("<es-US>" in t for t in texts) == 6 and sum("<en-US>" in t for t in texts) > 0
    tok = Tokenizer(prepare_tokenizer(cfg).model, prompt.dictionary)
    ids = tok.encode("Ação, coração. <es-US>")
    assert 0 not in ids and tok.decode(ids) == "Ação, coração. <es-US>"  # id 0 is <unk>
    assert tok.find_tags(ids)[-1].locale == "es-US"
    trainer = trainer_from_scratch(cfg)
    assert {u.language for u in trainer.train_utts} == {"en-US", "de-DE"}


def test_best_checkpoint_is_judged_by_loss_while_wer_is_above_100(manifests, tmp_path, monkeypatch):
    """Early models emit garbage (WER > 100 %): best.nemo must follow the falling loss, then WER."""
    import babelcast.train.loop as loop
    from babelcast.train.validate import ValResult

    trainer = make_trainer(manifests, tmp_path / "run")
    exported = []
    trainer.export = lambda path: exported.append(path.name) or path
    results = iter([(5.0, 4.1), (9.0, 6.3), (2.0, 1.1), (2.5, 0.9), (1.5, 0.4), (3.0, 0.3)])  # (loss, wer)
    monkeypatch.setattr(loop, "validate", lambda *a, **k: ValResult(*next(results), 10, []))
    kept = []
    for _ in range(6):
        before = len(exported)
        trainer.validate()
        kept.append(len(exported) > before)
    assert kept == [True, False, True, True, True, True]


def test_a_step_larger_than_every_bucket_is_an_error(manifests, tmp_path):
    trainer = make_trainer(manifests, tmp_path / "run", max_steps=1, accumulate=50)
    with pytest.raises(ValueError, match="no duration bucket holds the 50 batches"):
        trainer.train_step(trainer._batches())


def test_init_from_starts_a_run_from_an_exported_model(manifests, tmp_path):
    """trainer.init_from: the weights and tokenizer of a .nemo start a new run (the demo model can
    be trained further on a new machine, where OUT_DIR/last.pt is gone)."""
    first = make_trainer(manifests, tmp_path / "a", max_steps=3)
    first.fit()
    nemo = tmp_path / "a" / "model.nemo"
    second = make_trainer(manifests, tmp_path / "b", max_steps=3, init_from=str(nemo), seed=99)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert (tmp_path / "b" / "tokenizer" / "tokenizer.model").read_bytes() == \
        (tmp_path / "a" / "tokenizer" / "tokenizer.model").read_bytes()
    save_another_tokenizer(tmp_path / "c")  # a run with another tokenizer
    with pytest.raises(ValueError, match="another tokenizer"):
        make_trainer(manifests, tmp_path / "c", max_steps=1, init_from=str(nemo))


def test_att_context_probs_weight_the_lookahead_draw(manifests, tmp_path):
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path / "run", max_steps=6)
    contexts = [tuple(c) for c in raw["model"]["encoder"]["att_context_size"]]
    raw["model"]["encoder"]["att_context_probs"] = [0.0, 1.0, 0.0, 0.0]  # NeMo's key: only [28, 0], the 80 ms one
    trainer = trainer_from_scratch(parse_train_config(raw))
    seen = Counter()
    trainer.model.encoder.register_forward_pre_hook(lambda m, args: seen.update([tuple(args[2:4])]))
    trainer.fit()
    assert set(seen) == {contexts[1]}
    assert read_nemo(tmp_path / "run" / "model.nemo").config["encoder"]["att_context_probs"] == [0.0, 1.0, 0.0, 0.0]
    refused = r"model.encoder.att_context_probs .*one finite weight >= 0 per att_context_size"
    for bad in ([1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 1.0], "0.5", ["a", 1, 1, 1], [1, "nan", 1, 1]):
        raw["model"]["encoder"]["att_context_probs"] = bad  # refused when the config is read, before any training
        with pytest.raises(ValueError, match=refused):
            parse_train_config(raw)


def test_init_layers_grows_a_model_deeper_from_its_layers(manifests, tmp_path):
    """trainer.init_layers: a deeper model starts from a trained one, layer i from its layer init_layers[i]
    (the rest of the weights as init_from), and exports a .nemo of the new depth."""
    first = make_trainer(manifests, tmp_path / "a", max_steps=2)
    first.fit()
    nemo = tmp_path / "a" / "model.nemo"
    n = first.model.cfg.encoder.n_layers
    layers = [0, *range(n), n - 1]  # first and last copied: n + 2 layers
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path / "b", max_steps=1, init_from=str(nemo), init_layers=layers)
    raw["model"]["encoder"]["n_layers"] = n + 2
    grown = trainer_from_scratch(parse_train_config(raw))
    old, new = first.model.state_dict(), grown.model.state_dict()
    for key, value in new.items():
        if key.startswith("encoder.layers."):
            i, rest = key[len("encoder.layers."):].split(".", 1)
            assert torch.equal(value, old[f"encoder.layers.{layers[int(i)]}.{rest}"]), key
        else:
            assert torch.equal(value, old[key]), key
    grown.fit()
    assert read_nemo(tmp_path / "b" / "model.nemo").config["encoder"]["n_layers"] == n + 2
    for bad in ([0] * (n + 1), [*range(n), n, 0], [0.0] * (n + 2)):  # too few; a layer init_from lacks; not ints
        raw["trainer"].update(init_layers=bad, out_dir=str(tmp_path / "c"))
        with pytest.raises(ValueError, match=r"trainer.init_layers .*one of init_from's encoder layers"):
            trainer_from_scratch(parse_train_config(raw))
    del raw["trainer"]["init_from"]
    with pytest.raises(ValueError, match="trainer.init_layers needs trainer.init_from"):
        trainer_from_scratch(parse_train_config(raw))


def test_cli_refuses_a_start_in_one_line_before_spawning(manifests, tmp_path, capsys):
    """`babelcast train` with processes: a start that cannot work (init_layers without init_from, another
    tokenizer than OUT_DIR's) is one line, not a worker process's traceback."""
    import yaml

    first = make_trainer(manifests, tmp_path / "a", max_steps=1)
    first.fit()
    train, val = manifests
    raw = tiny_train_config(train, val, tmp_path / "b", max_steps=1, processes=2, init_layers=[0, 0])
    config = tmp_path / "grow.yaml"
    config.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: trainer.init_layers needs trainer.init_from or --init-from (the model whose layers it copies)"
    save_another_tokenizer(tmp_path / "b")  # OUT_DIR has another tokenizer
    assert main(["train", str(config), "--init-from", str(tmp_path / "a" / "model.nemo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainer.init_from has another tokenizer than this run's OUT_DIR/tokenizer" in err
