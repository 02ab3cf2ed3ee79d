"""Using a trained checkpoint: generate (streamed, KV cache == no cache), eval, export to Hugging Face, fine-tune
with init_from, and one-line errors for bad input. One tiny training run (NANO) serves the whole module."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import NANO, assert_ok, compose, read_summary, run_bigtrain

from bigtrain.checkpoint_io import check_init_from, load_model, locate
from bigtrain.errors import BigtrainError

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny matrices: one thread beats two on a shared 2-core machine


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("use") / "base"
    assert_ok(run_bigtrain(*NANO, run_dir=run_dir, env=ONE_THREAD))
    return run_dir


def _run_task(task: str, run_dir: Path, *overrides: str) -> dict:
    from bigtrain.tasks import run_task

    return run_task(compose(f"task={task}", *overrides), run_dir)


def test_checkpoint_describes_itself(trained, tmp_path):
    """The run config travels inside last.ckpt: a copy away from its run directory still loads."""
    lone = tmp_path / "elsewhere.ckpt"
    lone.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes())
    ckpt = locate(lone)
    assert ckpt.kind == "lightning" and ckpt.gpt_config.n_embd == 32 and ckpt.run_config["model"]["name"] == "nano"
    model = load_model(ckpt)
    assert not model.training and model.num_params() == read_summary(trained)["n_params"]
    for path in (trained, trained / "checkpoints" / "last.ckpt"):  # a run directory is accepted too
        assert torch.equal(load_model(locate(path)).transformer.wte.weight, model.transformer.wte.weight)


def test_greedy_generation_deterministic_and_kv_equals_no_cache(trained, tmp_path):
    common = ("ckpt=" + str(trained), "prompt=import os", "generate.temperature=0", "generate.max_new_tokens=48")
    runs = [
        _run_task("generate", tmp_path / f"g{i}", *common, f"generate.kv_cache={kv}", "generate.stream=false")
        for i, kv in enumerate(("true", "true", "false"))
    ]
    completions = [r["completions"][0] for r in runs]
    assert completions[0] == completions[1] == completions[2]
    assert [r["new_tokens"] for r in runs] == [48, 48, 48]  # past the 32-token context: the window slides
    saved = json.loads((tmp_path / "g0" / "generated.json").read_text())
    assert saved["completions"] == [completions[0]] and saved["prompt"] == "import os"


def test_generate_streams_from_prompt_file(trained, tmp_path):
    """The real front door: tokens printed as they come, the same text in generated.json; seeded sampling."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("def main(")
    run_dir = tmp_path / "gen"
    proc = run_bigtrain(
        "task=generate",
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"prompt_file={prompt}",
        "generate.max_new_tokens=40",
        "generate.top_p=0.95",
        "generate.num_samples=2",
        run_dir=run_dir,
        env=ONE_THREAD,
    )
    assert_ok(proc)
    saved = json.loads((run_dir / "generated.json").read_text())
    assert proc.stdout == "def main(" + saved["completions"][0] + "\n---\ndef main(" + saved["completions"][1] + "\n"
    assert saved["completions"][0] != saved["completions"][1]  # two samples, two seeds
    assert saved["new_tokens"] == 80


def test_stream_printer_waits_for_whole_characters():
    """Byte tokens can split a character: nothing is printed until its last byte arrives."""
    import io

    from bigtrain.data.tokenizer import ByteTokenizer
    from bigtrain.tasks.generate import StreamPrinter

    out = io.StringIO()
    printer = StreamPrinter(ByteTokenizer(), out)
    seen = []
    for b in "aé∑".encode():
        printer.add(b)
        seen.append(out.getvalue())
    assert seen == ["a", "a", "aé", "aé", "aé", "aé∑"]
    printer.add(0xE2)  # a sample can end inside a character: finish() prints the replacement character
    assert printer.finish() == "aé∑\ufffd" == out.getvalue()


def test_bad_input_one_line_exit_2(trained, tmp_path):
    proc = run_bigtrain("task=generate", f"ckpt={tmp_path / 'nope.ckpt'}", "prompt=x", run_dir=tmp_path / "r")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"bigtrain: error: ckpt={tmp_path / 'nope.ckpt'} does not exist; pass ckpt=<a .ckpt file, "
        "a run directory, a DeepSpeed/FSDP/tensor-parallel/pipeline checkpoint directory or a Hugging Face GPT-2 "
        "or Llama directory>"
    ]
    assert not (tmp_path / "r").exists()


def test_bad_input_errors(trained, tmp_path):
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    with pytest.raises(BigtrainError, match=r"the prompt is 33 tokens but the model's context \(block_size\) is 32"):
        _run_task("generate", tmp_path, f"ckpt={ckpt}", "prompt=" + "x" * 33)
    with pytest.raises(BigtrainError, match="exactly one of prompt=TEXT or prompt_file=PATH"):
        _run_task("generate", tmp_path, f"ckpt={ckpt}")
    # Another architecture: these weights under a config that says 3 layers of 64.
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    blob = torch.load(ckpt, weights_only=False)
    blob["bigtrain_config"]["model"].update(n_layer=3, n_embd=64)
    torch.save(blob, other / "checkpoints" / "last.ckpt")
    with pytest.raises(BigtrainError, match=r"does not fit the model n_layer=3 n_head=2 n_embd=64.*another arch"):
        _run_task("eval", tmp_path, f"ckpt={other}")
    # Not a checkpoint at all.
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    with pytest.raises(BigtrainError, match="cannot be read as a PyTorch checkpoint"):
        locate(junk)


@pytest.mark.slow
def test_eval_scores_a_bounded_slice_by_default(trained, tmp_path, capsys):
    """Without eval.max_tokens, task=eval scores the first 65,536 tokens of the validation split (the whole split
    of the built-in corpus took 688 s for nano), and says how to score all of it."""
    result = _run_task("eval", tmp_path / "e", f"ckpt={trained}", "trainer.progress=false", "eval.batch_size=64")
    assert result["tokens"] == 65536
    assert "eval.max_tokens=null: all" in capsys.readouterr().out


def test_eval_val_split_and_files(trained, tmp_path):
    result = _run_task("eval", tmp_path / "e", f"ckpt={trained}", "eval.max_tokens=4000", "trainer.progress=false")
    assert result["tokens"] == 4000
    assert math.isclose(result["perplexity"], math.exp(result["loss"]))
    # Learned something in 12 steps (chance is ln 256 = 5.55), and agrees with training's own validation.
    assert result["loss"] < 5.2
    assert abs(result["loss"] - read_summary(trained)["final_val_loss"]) < 0.25
    assert json.loads((tmp_path / "e" / "eval.json").read_text()) == result

    # A text file: 100 bytes = 99 predictions in windows of 32, 32, 32, 3; checked against the model directly.
    text = tmp_path / "t.txt"
    text.write_text(("for i in range(10):\n    print(i)\n" * 4)[:100])
    result = _run_task("eval", tmp_path / "f", f"ckpt={trained}", f"eval.files=[{text}]", "eval.batch_size=2")
    model, ids = load_model(locate(trained)), torch.tensor(list(text.read_bytes()))
    with torch.no_grad():
        losses = [
            torch.nn.functional.cross_entropy(
                model(ids[s : s + n][None])[0][0], ids[s + 1 : s + n + 1], reduction="sum"
            )
            for s, n in ((0, 32), (32, 32), (64, 32), (96, 3))
        ]
    assert result["tokens"] == 99
    assert math.isclose(result["loss"], float(sum(losses)) / 99, rel_tol=1e-5)


def test_export_loads_in_transformers_with_equal_logits(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    info = _run_task("export", tmp_path / "x", f"ckpt={trained}", f"export.out_dir={out}")
    assert set(info["files"]) == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf = transformers.GPT2LMHeadModel.from_pretrained(out, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "import sys\nprint(sys.argv)"
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == list(text.encode())
    model = load_model(locate(trained))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], atol=1e-5, rtol=0)
    # The exported directory is a checkpoint too: generation from it matches the original.
    common = ("prompt=import", "generate.temperature=0", "generate.max_new_tokens=20", "generate.stream=false")
    a = _run_task("generate", tmp_path / "a", f"ckpt={out}", *common)
    b = _run_task("generate", tmp_path / "b", f"ckpt={trained}", *common)
    assert a["completions"] == b["completions"]
    assert check_init_from(compose(f"init_from={out}", "model=nano")).kind == "hf"  # fine-tuning from it works too


def test_export_refuses_head_dim_model(tmp_path):
    from bigtrain.model import GPT, GPTConfig

    config = {"model": dict(n_layer=1, n_head=2, n_embd=32, head_dim=8, block_size=16, vocab_size=256, bias=True)}
    torch.save(
        {"state_dict": GPT(GPTConfig(**config["model"])).state_dict(), "bigtrain_config": config}, tmp_path / "m.ckpt"
    )
    with pytest.raises(BigtrainError, match="cannot be exported as a Hugging Face GPT-2"):
        _run_task("export", tmp_path / "x", f"ckpt={tmp_path / 'm.ckpt'}")
    assert not (tmp_path / "x" / "hf").exists()


def test_init_from_checks_architecture_and_tokenizer(trained):
    with pytest.raises(
        BigtrainError, match=r"holds n_layer=2 n_head=2 n_embd=32 attn_dim=32 block_size=32 .*use model=nano"
    ):
        check_init_from(compose(f"init_from={trained}", "model=tiny"))
    with pytest.raises(BigtrainError, match="data.tokenizer=byte but this run has data.tokenizer=bpe"):
        check_init_from(compose(f"init_from={trained}", "model=nano", "data=text", "data.source=x"))
    assert check_init_from(compose(f"init_from={trained}", "model=nano")).kind == "lightning"


def test_init_from_loads_the_weights_exactly(trained):
    from bigtrain.training.module import GPTLightningModule

    cfg = compose(f"init_from={trained}", "model=nano")
    module = GPTLightningModule(cfg.model, cfg.optim, 10, 256, init_from=cfg.init_from)
    module.configure_model()
    expected = load_model(locate(trained)).state_dict()
    assert all(torch.equal(module.model.state_dict()[k], v) for k, v in expected.items())


@pytest.mark.slow
def test_finetune_recipe_on_other_text(trained, tmp_path):
    """recipe=finetune-text: new data (plain English, not Python), the base run's weights, a fresh schedule."""
    corpus = tmp_path / "story.txt"
    corpus.write_text(" ".join(f"The cat number {i} sat on the mat and looked at the dog." for i in range(600)))
    run_dir = tmp_path / "ft"
    proc = run_bigtrain(
        *NANO,
        "recipe=finetune-text",
        "model=nano",
        f"init_from={trained}",
        f"data.source={corpus}",
        "trainer.max_steps=8",
        "trainer.val_check_interval=4",
        run_dir=run_dir,
        env=ONE_THREAD,
    )
    assert_ok(proc)
    s = read_summary(run_dir)
    assert s["init_from"] == str(trained) and s["steps"] == 8
    assert s["final_val_loss"] < s["first_val_loss"]
    # The fine-tuned checkpoint is a checkpoint like any other, and remembers where it started.
    assert locate(run_dir).run_config["init_from"] == str(trained)


def test_fsdp_sharded_directory_is_merged(trained, tmp_path):
    """A sharded FSDP checkpoint in Lightning's layout (torch.distributed.checkpoint files with the weights under
    "model", meta.pt with the rest), written here with torch.distributed.checkpoint from the trained weights since
    bigtrain has no FSDP strategy yet: it loads to the same weights and generates the same text."""
    import torch.distributed.checkpoint as dcp

    blob = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    sharded = tmp_path / "run" / "checkpoints" / "last.ckpt"
    dcp.save({"model": blob.pop("state_dict")}, checkpoint_id=str(sharded), no_dist=True)
    blob.pop("optimizer_states")
    torch.save(blob, sharded / "meta.pt")
    ckpt = locate(tmp_path / "run")
    assert ckpt.kind == "fsdp" and ckpt.run_config["model"]["name"] == "nano"
    expected = load_model(locate(trained)).state_dict()
    assert all(torch.equal(load_model(ckpt).state_dict()[k], v) for k, v in expected.items())
    common = ("prompt=class ", "generate.temperature=0", "generate.max_new_tokens=20", "generate.stream=false")
    a = _run_task("generate", tmp_path / "a", f"ckpt={sharded}", *common)
    b = _run_task("generate", tmp_path / "b", f"ckpt={trained}", *common)
    assert a["completions"] == b["completions"]
    (sharded / ".metadata").unlink()
    (sharded / "latest").write_text("nope")  # now it looks like a broken DeepSpeed folder
    (tmp_path / "run" / "config.yaml").write_text((trained / "config.yaml").read_text())
    with pytest.raises(BigtrainError, match="cannot merge the deepspeed checkpoint"):
        load_model(locate(sharded))


@pytest.mark.slow
def test_generation_from_zero3_shards_equals_consolidated_file(tmp_path):
    """Two CPU ranks train with ZeRO-3; generation from the sharded directory (merged on the fly) and from its
    consolidated single file give the same text."""
    run_dir = tmp_path / "z3"
    proc = run_bigtrain(
        *NANO, "parallelism=deepspeed", "zero=3", "hardware.devices=2", "trainer.sample_tokens=0", run_dir=run_dir
    )
    assert_ok(proc)
    shards = run_dir / "checkpoints" / "last.ckpt"
    assert shards.is_dir()
    ckpt = locate(shards)
    assert ckpt.kind == "deepspeed"
    single = tmp_path / "single.ckpt"
    torch.save({"state_dict": load_model(ckpt).state_dict(), "bigtrain_config": ckpt.run_config}, single)
    common = ("prompt=def ", "generate.temperature=0", "generate.max_new_tokens=40", "generate.stream=false")
    a = _run_task("generate", tmp_path / "a", f"ckpt={shards}", *common)
    b = _run_task("generate", tmp_path / "b", f"ckpt={single}", *common)
    assert a["completions"] == b["completions"]
