"""The sections of the run configuration, one frozen dataclass each, every key with its default and meaning.

selfplay/config.py puts them together as `Config`, reads a YAML file with overrides into it and checks it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    policy: str = "builtin:arena"      # hub id, local HF directory, builtin:arena or builtin:arena/topical (made by `make assets`)
    dtype: str = "float32"             # compute dtype: float32 | bfloat16 | float16. Trainable weights and optimizer
                                       # state stay fp32 (master weights) whatever this says; checkpoints, frozen
                                       # references and generation engines use this dtype
    max_length: int = 512              # prompt + response tokens seen by the trainer
    max_prompt_length: int = 0         # 0: (prompt + response)[:max_length]. N > 0, SPPO's sppo/trainer.py: a pair too long
                                       # keeps its prompt's last N tokens, then both responses' first max_length − N
    # Model facts for `make plan` and the memory checks when the checkpoint is not a local directory
    # (a local config.json wins). 0 = unknown: the plan then cannot size the model and says so.
    num_parameters: float = 0.0        # e.g. 7.24e9
    hidden_size: int = 0               # with num_layers: sizes LoRA adapters (rank × ~21.5 × hidden per layer)
    num_layers: int = 0


@dataclass(frozen=True)
class DataConfig:
    # One pool (a string: hub dataset, local datasets dir, .jsonl/.json/.parquet file), sliced disjointly
    # into rounds of prompts_per_round; or a list, one source per round (SPPO/INPO's iter1/2/3 sets),
    # each taking its first prompts_per_round prompts.
    train_prompts: str | tuple[str, ...] = "builtin:arena/train"
    eval_prompts: str = "builtin:arena/eval"
    split: str = "train"               # split name for hub datasets
    prompt_column: str = "prompt"
    id_column: str = "prompt_id"       # created from the row index when the data has none
    teacher_column: str = ""           # DNO: a column of the training prompt source holding a gold (teacher) response,
                                       # a string or a list of chat messages (the last assistant turn is used); the
                                       # judge stage adds it to each prompt's candidates (arXiv 2404.03715 §5.1,
                                       # y_gold). "" = no teacher
    prompts_per_round: int = 96        # round n uses its own slice of the pool (or its own source)
    reuse_prompts: bool = False        # allow rounds past the end of the pool/list (wrapping around); else an error
    eval_limit: int = 0                # 0 = every eval prompt
    single_turn: bool = False          # prompt_column holds chat-message lists: keep one-message rows (EGPO's lms/utils.py)
    max_prompt_chars: int = 0          # keep prompts (train and eval) shorter than this many characters (0 = any length)
    max_prompts: int = 0               # a training source's first N prompts left by the two above (0 = all)


@dataclass(frozen=True)
class GenerationConfig:
    backend: str = "hf"                # hf | vllm | auto
    k: int = 5                         # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                     # 0 = no top-k filter (EGPO's authors: 10 for (y, y′))
    max_new_tokens: int = 24
    batch_size: int = 64
    # The online algorithms' opponent has its own sampler: EGPO's y″ (its authors: temperature 1, no top-k,
    # while (y, y′) use the settings above) and Nash-MD's mixture sample y′. Read only by egpo and nash_md.
    opponent_temperature: float = 1.0
    opponent_top_k: int = 0
    num_engines: int = 1               # data-parallel generation actors
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85


@dataclass(frozen=True)
class JudgeConfig:
    name: str = "oracle"               # oracle | pairrm | llm | self_reward | cream
    model: str = ""                    # checkpoint for pairrm / llm judges
    endpoint: str = ""                 # OpenAI-compatible URL for the llm judge
    batch_size: int = 32
    aggregation: str = "sppo"          # pairrm: sppo (σ(s_i − s_j)) | pairwise (order-averaged σ(L_ij))
    samples: int = 3                   # self_reward: judge samples averaged per response
    consistency: str = "per_prompt"    # cream: per_prompt (each prompt its own C) | mean (dataset-mean C)
    score_mode: str = "sample"         # self_reward: sample (parse "Score: N" from sampled text) | logprobs (expected digit)
    backend: str = "hf"                # llm / self_reward local judge model: hf | vllm | auto
    max_new_tokens: int = 0            # judge text budget; 0 = the judge's default (llm endpoint 16, self_reward 256)
    temperature: float = 0.7           # self_reward sample mode: judge sampling temperature (paper setup 0.7)
    top_p: float = 0.9                 # self_reward sample mode: judge sampling top-p
    api_key_env: str = "OPENAI_API_KEY"  # llm endpoint: environment variable with the API key (unset: no auth header)
    timeout_s: float = 60.0            # llm endpoint: seconds per HTTP request (retried twice, then the stage fails)
    num_actors: int = 1                # data-parallel judge actors, each with resources.judge; prompts are sharded
    dtype: str = "auto"                # pairrm weights: auto (fp16 on a GPU, fp32 on the CPU, as llm-blender) | float32 |
                                       # bfloat16 | float16 | int8 (CPU: dynamic int8 quantisation of the linear layers)
    prompt_format: str = "raw"         # pairrm's prompt: raw | chat (the policy's chat template up to the answer: SPPO's rank.py)
    mode: str = "pairwise"             # llm: pairwise (A/B verdicts, both orders) | rubric (DNO's 6-point additive rubric,
                                       # all candidates scored side by side; P(a ≻ b) = 1 / ½ / 0 by score; endpoint only;
                                       # max_new_tokens 0 = 256 per candidate shown)


@dataclass(frozen=True)
class LossConfig:
    eta: float = 10.0                  # SPPO η (authors' β = 1/η); INPO η
    beta: float = 0.1                  # DPO / IPO / DNO / EGPO β; Nash-MD's KL(π_θ‖π_ref) strength
    tau: float = 0.0                   # INPO τ (0 = INPO without KL)
    alpha: float = 0.3                 # APO momentum α (0 = iterative DPO/SPPO)
    mixture_coef: float = 0.125        # Nash-MD: weight m of π_ref in the opponent's per-token mixture π_θ^{1−m} π_ref^m
                                       # (EGPO's code runs Nash-MD at 0.125; TRL's default is 0.5)
    apo_base: str = "sppo"             # APO base loss: sppo | dpo
    label_smoothing: float = 0.0
    average_logprobs: bool = False     # per-token means instead of sums (EGPO's default is True)
    # DNO pairs from absolute judge scores (arXiv 2404.03715 §5.1 "Training Pair Construction", on its 6-point rubric):
    dno_min_chosen_score: float = 5.0  # DNO: a chosen response must score at least this ("only 5 or 6 are positives")
    dno_margin: float = 2.0            # DNO: the rejected scores at least this much lower ("at least 2 points")...
    dno_student_margin: float = 1.0    # ... or this much when the chosen is a policy sample, not the teacher ("1 point")
    dno_replay: float = 0.0            # DNO: fraction of the previous round's pairs replayed


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-4
    epochs: int = 2
    batch_size: int = 32
    optimizer: str = "adamw"           # adamw | rmsprop (SPPO's choice) | sgd
    schedule: str = "linear"           # linear | cosine | constant
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    workers: int = 1                   # data-parallel Ray Train workers, each with resources.trainer
    strategy: str = "ddp"              # ddp | fsdp (shard params/grads/optimizer) | fsdp_offload (shards on host)
    lora_rank: int = 0                 # > 0: peft LoRA adapters, merged into the saved checkpoint
    lora_alpha: float = 16.0
    lora_targets: str | tuple[str, ...] = "all-linear"   # every linear layer but the head, or module names (peft matches
                                       # a name's last part; EGPO's code names none: peft's qwen2 default [q_proj, v_proj])
    # Online updates (egpo, nash_md): optimizer steps per round (egpo's: each a half+full extragradient pair), on
    # train.batch_size fresh prompts sampled from the trainer's own weights. 0 = one pass over the round's prompts.
    steps_per_round: int = 0
    extragradient_prompts: str = "successive"   # egpo: successive (each half its own batch, as the authors) | same


@dataclass(frozen=True)
class EvalConfig:
    samples_per_prompt: int = 2
    ci_method: str = "bootstrap"       # bootstrap | wilson
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class InitConfig:
    """An optional SFT stage before round 1: round 0's policy becomes model.policy fine-tuned on
    sft_data (CREAM and self-rewarding start from an SFT model M1 and keep the base M0 beside it).
    It trains through the same trainer as the rounds (train.batch_size, optimizer, schedule, LoRA,
    workers, strategy and dtype apply); epochs and lr are its own."""
    sft_data: str = ""                 # prompt/response dataset (file, datasets dir, hub id, builtin:arena/sft); "" = none
    prompt_column: str = "prompt"
    response_column: str = "response"
    epochs: int = 1
    lr: float = 1e-4


@dataclass(frozen=True)
class ActorResources:
    num_cpus: float = 1
    num_gpus: float = 0


@dataclass(frozen=True)
class ResourcesConfig:
    generation: ActorResources = field(default_factory=ActorResources)
    judge: ActorResources = field(default_factory=ActorResources)
    trainer: ActorResources = field(default_factory=ActorResources)
    gpu_memory_gb: float = 80.0        # the GPU size `make plan` budgets against when it cannot look at one
    stage_retries: int = 1             # a stage whose actor dies (its process killed, e.g. out of memory) is run again
                                       # from its start this many times, then the round fails naming the stage
    stall_report_s: float = 600.0      # a stage whose logs do not grow for this long is reported with its log's last
                                       # lines (again after each further period); 0 = never


@dataclass(frozen=True)
class WandbConfig:
    mode: str = "offline"              # offline | online | disabled (env WANDB_MODE wins)
    project: str = "selfplay"
    entity: str = ""
