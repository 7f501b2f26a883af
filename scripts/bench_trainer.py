"""The project's DPO trainer vs TRL's DPOTrainer on the same locally built model, tokens and settings.

    python scripts/bench_trainer.py                       # short CI-sized defaults (make bench)
    python scripts/bench_trainer.py --hidden 512 --layers 8 --max-length 512 --pairs 32 --batch 8   # README shape
    python scripts/bench_trainer.py --device cuda --dtype bfloat16 ...                              # on a GPU

Builds (no hub) a Llama-architecture causal LM with a 32k vocabulary and a word-level tokenizer, and
preference pairs of random lengths. Both trainers run DPO (sigmoid loss, β, AdamW, constant LR, grad-norm
clip 1, no gradient checkpointing) from the same weights on identical token ids (checked), with reference
log-probs computed before training (TRL: precompute_ref_log_probs, so no reference model is resident; ours:
the Worker's reference pass). Timed: training only (load, reference pass and save excluded). Each run is
its own process, in alternating order, `--reps` times; peak memory is that of training alone (host RSS high
water mark reset before it, or CUDA max_memory_allocated). The levers (selfplay.logprobs.Levers) are
measured the same way, each added on top of the previous one, starting from the path before them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<unk>"]
# (name, Levers fields): cumulative, from the path before this work to the default
LEVERS = [("before: full fp32 logits, one padded forward", dict(chunked_head=False, length_groups=False,
                                                                attention_mask=True)),
          ("+ chunked head on response tokens", dict(chunked_head=True, length_groups=False, attention_mask=True)),
          ("+ length groups", dict(chunked_head=True, length_groups=True, attention_mask=True)),
          ("+ no attention mask", dict(chunked_head=True, length_groups=True, attention_mask=False))]


def build(out: Path, a) -> None:
    """Tokenizer (word level: 'w<i>' is one token) and a randomly initialised model, saved in `out`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = SPECIAL + ["user", "assistant"] + [f"w{i}" for i in range(a.vocab - len(SPECIAL) - 2)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    # Llama, not Qwen2: AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer, which rebuilds a byte-level BPE
    # and would drop this word-level vocabulary. The two architectures differ only in Qwen2's q/k/v biases.
    model = LlamaForCausalLM(LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden,
                                         intermediate_size=a.intermediate or int(a.hidden * 2.75),
                                         num_hidden_layers=a.layers, num_attention_heads=a.heads,
                                         num_key_value_heads=a.kv_heads, max_position_embeddings=max(a.max_length, 512),
                                         tie_word_embeddings=a.tied, eos_token_id=fast.eos_token_id,
                                         pad_token_id=fast.pad_token_id))
    model.save_pretrained(out)
    fast.save_pretrained(out)


def make_pairs(a) -> list[dict]:
    """Prompts and responses of uniformly random word counts; prompt + response + end of turn fits max_length."""
    import random
    rng = random.Random(0)
    text = lambda n: " ".join(f"w{rng.randrange(a.vocab - 16)}" for _ in range(n))  # noqa: E731
    overhead = 6   # template tokens around the prompt, and the end of turn
    out = []
    for i in range(a.pairs):
        p = rng.randint(a.min_prompt, a.max_prompt)
        room = a.max_length - p - overhead
        out.append({"prompt": text(p), "chosen": text(rng.randint(min(a.min_response, room), room)),
                    "rejected": text(rng.randint(min(a.min_response, room), room)), "prompt_id": str(i)})
    return out


# ---------------------------------------------------------------- one measured run (a child process)

def _reset_peak(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM, the RSS high-water mark (Linux)


def _peak_mb(device: str) -> float:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def run_ours(a, model_dir: str, rows: list[dict], lever: dict) -> dict:
    import random

    import torch

    from selfplay import logprobs
    from selfplay.config import Config, LossConfig, ModelConfig, TrainConfig
    from selfplay.dist_spec import dist_spec
    from selfplay.distributed import TrainJob
    from selfplay.records import PreferencePair
    from selfplay.trainer import TrainResult
    from selfplay.worker import Worker

    logprobs.DEFAULT = logprobs.Levers(**lever)
    pairs = [PreferencePair(r["prompt"], r["chosen"], r["rejected"], r["prompt_id"], 1.0, 0.0) for r in rows]
    cfg = Config(algorithm="dpo", model=ModelConfig(policy=model_dir, max_length=a.max_length, dtype=a.dtype),
                 loss=LossConfig(beta=a.beta),
                 train=TrainConfig(lr=a.lr, epochs=a.epochs, batch_size=a.batch, schedule="constant",
                                   warmup_ratio=0.0, optimizer="adamw", max_grad_norm=1.0))
    job = TrainJob(model_dir, tempfile.mkdtemp(), pairs, {"previous": model_dir}, cfg, 0, dist_spec(cfg))
    w = Worker(job, rank=0, world=1, device=torch.device(a.device), total_steps=a.epochs * -(-len(pairs) // a.batch))
    t0 = time.perf_counter()
    refs = w.references(pairs)
    ref_s = time.perf_counter() - t0
    result = TrainResult(pairs=len(pairs))
    if a.profile:
        _profile_steps(a, w, pairs, refs)
    _reset_peak(a.device)
    t0 = time.perf_counter()
    w.epochs(pairs, refs, result, random.Random(0))
    if a.device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(a.device), "ref_seconds": ref_s,
            "loss": result.loss_curve[-1]}


def _profile_steps(a, w, pairs, refs) -> None:
    """Each optimizer step's wall time over one pass, then torch.profiler's table of one more (warm) step,
    on stderr: where a step's time goes on this device (it trains the weights the timed run then starts from)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    w.model.train()
    batches = [list(range(i, min(i + a.batch, len(pairs)))) for i in range(0, len(pairs), a.batch)]
    times = []
    for b in batches:
        t0 = time.perf_counter()
        w._step(pairs, refs, b)
        sync()
        times.append(time.perf_counter() - t0)
    print("profile: step seconds " + " ".join(f"{t:.3f}" for t in times), file=sys.stderr)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
    with profile(activities=acts) as prof:
        w._step(pairs, refs, batches[0])
        sync()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=70),
          file=sys.stderr)


def run_trl(a, model_dir: str, rows: list[dict]) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.logprobs import encode

    tok = AutoTokenizer.from_pretrained(model_dir)
    head = lambda p: tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,  # noqa: E731
                                             add_generation_prompt=True)
    ds = datasets.Dataset.from_list([{"prompt": head(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
                                     for r in rows])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.batch, num_train_epochs=a.epochs,
                         learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         max_grad_norm=1.0, optim="adamw_torch", beta=a.beta, loss_type=["sigmoid"],
                         max_length=a.max_length, precompute_ref_log_probs=True, gradient_checkpointing=False,
                         bf16=a.dtype == "bfloat16", fp16=False, use_cpu=a.device == "cpu", report_to=[],
                         save_strategy="no", logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    for row, r in zip(trainer.train_dataset, rows):   # the same token ids as ours, or the comparison is void
        for side in ("chosen", "rejected"):
            (ids, n), = encode(tok, [r["prompt"]], [r[side]], a.max_length)
            if row["prompt_ids"] != ids[:n] or row[f"{side}_ids"] != ids[n:]:
                raise SystemExit(f"TRL tokenised pair {r['prompt_id']} ({side}) differently from the project")
    assert trainer.ref_model is None, "a reference model is resident"
    _reset_peak(a.device)
    t0 = time.perf_counter()
    out = trainer.train()
    if a.device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(a.device), "loss": out.training_loss}


def child(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    rows = json.loads((Path(a.dir) / "pairs.json").read_text())
    model_dir = str(Path(a.dir) / "model")
    res = run_trl(a, model_dir, rows) if a.child == "trl" else run_ours(a, model_dir, rows, json.loads(a.child))
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------- the parent: alternate, summarise

def tokens_per_epoch(a, model_dir: str, rows: list[dict]) -> int:
    from transformers import AutoTokenizer

    from selfplay.logprobs import encode
    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(ids) for side in ("chosen", "rejected")
               for ids, _ in encode(tok, [r["prompt"] for r in rows], [r[side] for r in rows], a.max_length))


def spawn(a, which: str) -> dict:
    argv = [sys.executable, __file__, "--child", which, "--dir", a.dir] + a.passthrough
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if a.profile and which != "trl":
        print("\n".join(x for x in p.stderr.splitlines() if "it/s]" not in x), flush=True)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        sys.exit(f"error: the {which} run failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):9.1f}  [{min(xs):.1f}, {max(xs):.1f}]"


def parent(a) -> None:
    a.dir = tempfile.mkdtemp(prefix="bench_trainer_")
    build(Path(a.dir) / "model", a)
    rows = make_pairs(a)
    (Path(a.dir) / "pairs.json").write_text(json.dumps(rows))
    tokens = tokens_per_epoch(a, str(Path(a.dir) / "model"), rows) * a.epochs
    print(f"model: llama, vocab {a.vocab}, hidden {a.hidden}, {a.layers} layers, tied={a.tied}; {a.pairs} pairs, "
          f"batch {a.batch}, max length {a.max_length}, {a.epochs} epoch(s), {tokens} tokens per run; {a.dtype}, "
          f"{a.device}, {a.threads} torch thread(s); {a.reps} alternating repetitions", flush=True)
    runs: dict[str, list[dict]] = {}
    names = ["trl", json.dumps({})] + ([json.dumps(lv) for _, lv in LEVERS] if a.levers else [])
    for rep in range(a.reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            runs.setdefault(name, []).append(spawn(a, name))
            print(f"  rep {rep + 1} {'TRL' if name == 'trl' else 'ours ' + name}: "
                  f"{runs[name][-1]['seconds']:.1f}s", flush=True)
    tps = {k: [tokens / r["seconds"] for r in v] for k, v in runs.items()}
    peak = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
    ours, trl = json.dumps({}), "trl"
    mem = "CUDA max allocated" if a.device == "cuda" else "peak RSS during training"
    print(f"\n{'':38s} tokens/s median [min, max]   {mem} (MB)")
    print(f"{'TRL DPOTrainer (precomputed refs)':38s} {spread(tps[trl])}   {peak[trl]:8.0f}")
    print(f"{'selfplay trainer':38s} {spread(tps[ours])}   {peak[ours]:8.0f}")
    ratio = [o / t for o, t in zip(tps[ours], tps[trl])]
    print(f"ratio ours/TRL (median of medians) {statistics.median(tps[ours]) / statistics.median(tps[trl]):.2f}x; "
          f"per repetition {min(ratio):.2f}-{max(ratio):.2f}x; peak memory ours/TRL {peak[ours] / peak[trl]:.2f}")
    ref_s = statistics.median(r["ref_seconds"] for r in runs[ours])
    print(f"reference pass (ours, once per round, excluded above): {ref_s:.1f}s; "
          f"a resident reference would pay about that every epoch")
    if a.levers:
        print("\nlevers, cumulative (tokens/s median [min, max], peak MB, vs the line above)")
        prev = None
        for label, lv in LEVERS:
            k = json.dumps(lv)
            m = statistics.median(tps[k])
            print(f"  {label:46s} {spread(tps[k])}  {peak[k]:8.0f}" + (f"  {m / prev:.2f}x" if prev else ""))
            prev = m
        print(f"  {'ours: the defaults (length groups on a CPU only)':46s} {spread(tps[ours])}  {peak[ours]:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=0, help="0: 2.75 x hidden")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--tied", action="store_true", help="tie the input embeddings and the LM head")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--min-prompt", type=int, default=8)
    ap.add_argument("--max-prompt", type=int, default=0, help="0: max_length / 4")
    ap.add_argument("--min-response", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--levers", action="store_true", help="also measure each lever (cumulative)")
    ap.add_argument("--profile", action="store_true", help="ours: print each step's time and a torch.profiler "
                    "table of one warm step, before each timed run (use with --reps 1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.max_prompt = a.max_prompt or a.max_length // 4
    a.passthrough = [x for x in sys.argv[1:] if x != "--levers"]
    if a.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch sees no GPU")
    if a.child:
        child(a)
    else:
        parent(a)


if __name__ == "__main__":
    main()
