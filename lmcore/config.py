"""params.yaml as one typed Params object: a documented dataclass per section, strict loading, one override rule.

Every field carries its help text (`doc`), which the stages' `--help` prints. Stages call `load_params` once and
put their flags on top of a section with `apply_overrides`, the only way values are merged.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmcore.errors import ConfigError

T = TypeVar("T")
TRAIN_KEY = "train"  # inside an architecture's section: its own pretraining values (Params.train_for)
DTYPES = ("auto", "bf16", "fp16", "fp32")
METRIC_GROUPS = ("perplexity", "accuracy", "generation", "speed")


def doc(default: Any, help: str) -> Any:
    """A dataclass field with its default and the help text that `--help` shows for its flag."""
    return field(default=default, metadata={"help": help})


def field_default(f: dataclasses.Field) -> Any:
    """A field's built-in default, also for list fields (which dataclasses keep as a factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def int_list(value: Any, where: str) -> list[int]:
    """A list-of-integers param: a YAML list `[1, 2, 4]`, or the flag form "1,2,4" ("" = empty); anything else,
    or an element that is not an integer, is a one-line error naming the param."""
    if isinstance(value, str):
        items: list[Any] = [s.strip() for s in value.split(",") if s.strip()]
        try:
            return [int(s) for s in items]
        except ValueError:
            raise ConfigError(f"{where}: expected integers separated by commas (as in 1,2,4), got {value!r}") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of integers such as [1, 2, 4], got {value!r}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}[{i}]: expected an integer, got {v!r} (in {list(value)!r})")
    return list(value)


def field_help(f: dataclasses.Field) -> str:
    """The help text of a field declared with `doc` ("" when it has none)."""
    return f.metadata.get("help", "")


@dataclass
class DatasetConfig:
    """One corpus definition under `datasets:`; `data:` picks which one the pipeline prepares."""

    source: str = doc(
        "builtin:stories",
        "hf:NAME[:config][@revision][?split=S&val_split=S&data_files=A,B&val_files=C&data_dir=D] (NAME: a Hub "
        "dataset, a save_to_disk or local folder, or json|csv|parquet|text with data_files) | a local file or "
        "folder | builtin:stories",
    )
    vocab_size: int = doc(2048, "BPE vocabulary size, special tokens included")
    max_docs: int | None = doc(None, "documents read from the source (train + val); null = all")
    val_fraction: float = doc(0.02, "held-out share, used when the source has no validation split of its own")
    seed: int = doc(1234, "seed of the train/val split (and of builtin:stories)")
    text_field: str = doc("text", "field holding the text in json/jsonl/parquet/hf records")
    streaming: bool = doc(False, "stream hf: datasets instead of downloading them whole")
    tokenizer_sample_docs: int | None = doc(
        None, "train the tokenizer on the first N train documents only (null = all)"
    )


@dataclass
class PrepareConfig:
    """How data preparation runs (not what it produces)."""

    num_workers: int = doc(2, "tokenisation processes (the output is identical for any number)")
    batch_size: int = doc(1000, "documents per tokenisation batch")


@dataclass
class TrainConfig:
    """The one training loop's knobs, shared by every architecture and by fine-tuning."""

    max_steps: int = doc(400, "optimizer steps; also the length of the LR schedule")
    stop_at_step: int = doc(0, "> 0: stop (and checkpoint) at this step, keeping max_steps' schedule; resume later")
    batch_size: int = doc(32, "rows per micro-batch, per process")
    seq_len: int = doc(128, "tokens per training row (fine-tuning takes it from the instruction data)")
    grad_accum_steps: int = doc(1, "micro-batches accumulated into one optimizer step")
    learning_rate: float = doc(2e-3, "peak learning rate, reached after warmup")
    min_lr_ratio: float = doc(0.1, "the cosine schedule decays to learning_rate * min_lr_ratio")
    warmup_steps: int = doc(40, "steps of linear warmup to learning_rate")
    weight_decay: float = doc(0.1, "AdamW decoupled weight decay, on matrices only (not norms or biases)")
    beta1: float = doc(0.9, "AdamW beta1")
    beta2: float = doc(0.95, "AdamW beta2")
    grad_clip: float = doc(1.0, "the global gradient norm is clipped to this value")
    eval_every: int = doc(100, "validate every N optimizer steps (and at the last one)")
    eval_batches: int = doc(8, "fixed validation batches per validation")
    log_every: int = doc(10, "log training metrics every N optimizer steps")
    checkpoint_every: int = doc(100, "save latest.pt every N optimizer steps (and at the last one)")
    num_samples: int = doc(2, "generations printed/logged at each validation")
    seed: int = doc(1337, "seed of initialisation, data order and noise")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = doc("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    compile: bool = doc(False, "torch.compile the model")
    gradient_checkpointing: bool = doc(False, "recompute activations in the backward pass to save memory")
    parallel: str = doc("ddp", "under torchrun (WORLD_SIZE > 1): ddp | fsdp (FSDP2 fully_shard); ignored for 1 process")
    skip_nonfinite_steps: bool = doc(
        False,
        "a NaN/inf loss or gradient norm: false stops the run (nothing bad is "
        "saved); true skips that optimizer step (one host sync per step) and "
        "counts it in train/skipped_steps",
    )
    wandb: bool = doc(True, "log to Weights & Biases")
    flops_budget: float = doc(
        0.0,
        "> 0: train the optimizer steps whose training FLOPs reach this budget (sets "
        "max_steps, hence the LR schedule); compares architectures at equal compute",
    )
    tokens_budget: float = doc(0.0, "> 0: train ceil(tokens / tokens per step) steps (sets max_steps); equal data")
    wandb_init_timeout: float = doc(15.0, "seconds W&B may take to start online; then it logs offline (wandb sync)")
    wandb_project: str = doc("diffusion-lm", "W&B project")
    wandb_run_name: str | None = doc(None, "W&B run name; null = {architecture}-{dataset}-{size}-v{version}")
    version: int = doc(1, "run version, part of the default W&B run name")
    wandb_log_checkpoints: bool = doc(
        False, "when the run ends, upload best.pt and latest.pt to W&B as a `model` artifact (can be large)"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # NaN passes every comparison below, inf trains to NaN
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"train.{f.name} must be a finite number, got {value}")
        positive = (
            "max_steps",
            "batch_size",
            "seq_len",
            "grad_accum_steps",
            "eval_every",
            "log_every",
            "checkpoint_every",
            "eval_batches",
            "wandb_init_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.stop_at_step <= self.max_steps:
            raise ConfigError(f"train.stop_at_step must be in [0, max_steps={self.max_steps}], got {self.stop_at_step}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.learning_rate}")
        for name in ("flops_budget", "tokens_budget"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be ≥ 0 (0 = off), got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"train.dtype must be auto|bf16|fp16|fp32, got '{self.dtype}'")
        if self.parallel not in ("ddp", "fsdp"):
            raise ConfigError(f"train.parallel must be ddp|fsdp, got '{self.parallel}'")


@dataclass
class EvaluateConfig:
    """What the evaluate stage measures and how hard it tries (`evaluate:`); the defaults keep a tiny model's
    evaluation with 100 samples near a minute on CPU."""

    metrics: str = doc("perplexity,accuracy,generation,speed", "any of perplexity|accuracy|generation|speed")
    num_samples: int = doc(100, "unconditional samples for the generation metrics")
    num_continuations: int = doc(10, "validation documents whose prefix the model continues")
    prefix_tokens: int = doc(16, "prompt length (tokens) of those continuations")
    length: int = doc(0, "sampled row length in tokens (prompt included); 0 = the checkpoint's train seq_len")
    steps: int = doc(16, "sampling steps for the generation metrics (architectures whose sampler has steps)")
    steps_sweep: list[int] = field(
        default_factory=lambda: [4, 16, 64],
        metadata={
            "help": "step counts for quality and speed against steps: [8, 32, 128] (flag: 8,32,128; empty: none)"
        },
    )
    sweep_samples: int = doc(8, "samples per step count in the sweep")
    temperature: float = doc(1.0, "sampling temperature (0 = greedy)")
    top_p: float = doc(1.0, "nucleus sampling mass")
    batch_size: int = doc(25, 'rows per sampling call ("batched" speed)')
    speed_repeats: int = doc(2, "batch-1 samples timed per setting")
    eval_batches: int = doc(0, "validation batches; 0 = the checkpoint's train eval_batches (numbers match training)")
    judge: str = doc(
        "auto",
        "generative-perplexity judge, never the evaluated model: grammar (builtin:stories: exact, under the "
        "generating grammar) | an AR checkpoint | auto (grammar where the corpus has one, else checkpoints/ar/best.pt) "
        '| "" (none)',
    )
    sampler: str = doc(
        "",
        "settings of the checkpoint's objective section to change for this evaluation, as key=value pairs, e.g. "
        "'renoise=false' (SDD's origin sampler rule); '' = as trained",
    )
    seed: int = doc(0, "seed of sampling")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = doc("auto", "auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    wandb: bool = doc(True, "log the results to Weights & Biases")
    wandb_project: str = doc("diffusion-lm", "W&B project")

    def __post_init__(self) -> None:
        unknown = sorted(self.metric_groups() - set(METRIC_GROUPS))
        if unknown:
            raise ConfigError(f"evaluate.metrics: unknown '{unknown[0]}' (known: {','.join(METRIC_GROUPS)})")
        for name in ("num_samples", "num_continuations", "length", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"evaluate.{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("prefix_tokens", "steps", "sweep_samples", "batch_size", "speed_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"evaluate.{name} must be ≥ 1, got {getattr(self, name)}")
        self.steps_sweep = int_list(self.steps_sweep, "evaluate.steps_sweep")  # also when built in code
        if any(s < 1 for s in self.steps_sweep):
            raise ConfigError(f"evaluate.steps_sweep: every step count must be ≥ 1, got {self.steps_sweep}")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("evaluate: temperature ≥ 0 and 0 < top_p ≤ 1 are required")
        if self.dtype not in DTYPES:
            raise ConfigError(f"evaluate.dtype must be auto|bf16|fp16|fp32, got '{self.dtype}'")

    def metric_groups(self) -> set[str]:
        """The requested metric groups as a set."""
        return {m.strip() for m in self.metrics.split(",") if m.strip()}

    def sweep(self) -> list[int]:
        """steps_sweep sorted, without repeats (empty: no sweep)."""
        return sorted(set(self.steps_sweep))


@dataclass
class PrepInstructConfig:
    """What prep_instruct builds (`prep_instruct:`)."""

    source: str = doc(
        "builtin:instructions",
        "alpaca | dolly | builtin:instructions | hf:... (as datasets.<name>.source: Hub, save_to_disk folder, "
        "hf:json?data_files=...) | a .json/.jsonl(.gz)",
    )
    format: str = doc("auto", "auto | alpaca (instruction/input/output) | dolly (instruction/context/response)")
    families: str = doc("", 'builtin:instructions only: comma-separated task families ("" = all)')
    num_examples: int = doc(0, "examples kept (0 = the whole source; required for builtin:instructions)")
    max_seq_len: int = doc(160, "tokens per row: prompt + response + <eos>")
    overflow: str = doc("truncate", "longer examples: truncate (the response side) | drop")
    val_fraction: float = doc(0.05, "share of the examples held out for validation")
    test_fraction: float = doc(0.05, "share of the examples held out for evaluate_instruct")
    seed: int = doc(1234, "seed of the split (and of builtin:instructions)")
    skip_bad_records: bool = doc(False, "leave invalid records out (counted in config.json) instead of failing")


@dataclass
class EvaluateInstructConfig:
    """How evaluate_instruct generates and scores responses (`evaluate_instruct:`)."""

    num_examples: int = doc(0, "test examples evaluated (0 = the whole test split)")
    temperature: float = doc(0.0, "sampling temperature; 0 = greedy: exact match measures the model's best answer")
    top_p: float = doc(1.0, "nucleus sampling mass")
    steps: int = doc(0, "sampling steps for diffusion/SDD (0 = the checkpoint's default)")
    batch_size: int = doc(32, "prompts per sampling call")
    seed: int = doc(0, "seed of sampling")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = doc("auto", "auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    wandb: bool = doc(True, "log the results to Weights & Biases")
    wandb_project: str = doc("diffusion-lm-finetune", "W&B project")

    def __post_init__(self) -> None:
        if self.num_examples < 0 or self.steps < 0 or self.batch_size < 1:
            raise ConfigError("evaluate_instruct: num_examples ≥ 0, steps ≥ 0 and batch_size ≥ 1 are required")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("evaluate_instruct: temperature ≥ 0 and 0 < top_p ≤ 1 are required")


@dataclass
class ScalingConfig:
    """The grid of a scaling study (`scaling:` in pipelines/scaling/params.yaml and
    pipelines/data_constrained/params.yaml): DVC's `matrix` trains every architecture × size × budget, and the
    report stages read the same lists to find the runs."""

    # `list[str]` first so _coerce passes a YAML list or a comma-separated string through (as steps_sweep).
    architectures: list[str] | str = field(
        default="ar,diffusion,sdd", metadata={"help": "architectures trained at every size and budget"}
    )
    sizes: list[str] | str = field(
        default="nano,micro,mini,tiny", metadata={"help": "size presets or model .yaml/.json files, smallest first"}
    )
    budgets: list[str] | str = field(
        default="4e11,1.6e12",
        metadata={"help": 'training FLOPs budgets (train.flops_budget of each run), e.g. ["4e11", "1.6e12"]'},
    )
    per_decade: int = doc(8, "frontier points per decade of compute the power law is fitted to")

    def __post_init__(self) -> None:
        # Imported here, not at the top: both packages import this module.
        from lmcore.models.presets import PRESETS
        from lmcore.objectives import REGISTRY

        for name in self.arch_list():
            if name not in REGISTRY:
                raise ConfigError(f"scaling.architectures: unknown '{name}' (known: {', '.join(REGISTRY)})")
        for size in self.size_list():
            if size not in PRESETS and not (Path(size).suffix in (".yaml", ".yml", ".json") and Path(size).is_file()):
                raise ConfigError(
                    f"scaling.sizes: unknown size '{size}' (presets: {', '.join(PRESETS)}; or a path to a "
                    f".yaml/.json model file)"
                )
        self.budget_values()  # validates
        if self.per_decade < 1:
            raise ConfigError(f"scaling.per_decade must be ≥ 1, got {self.per_decade}")

    @staticmethod
    def _items(value: list[str] | str, name: str) -> list[str]:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        out = [str(v).strip() for v in items if str(v).strip()]
        if not out:
            raise ConfigError(f"scaling.{name}: the list is empty")
        if len(set(out)) != len(out):
            raise ConfigError(f"scaling.{name}: repeated entries in {out}")
        return out

    def arch_list(self) -> list[str]:
        """The architectures as a list of names."""
        return self._items(self.architectures, "architectures")

    def size_list(self) -> list[str]:
        """The sizes as a list of preset names or model files."""
        return self._items(self.sizes, "sizes")

    def budget_list(self) -> list[str]:
        """The budgets as written (the run folders and DVC stage names use these spellings)."""
        return self._items(self.budgets, "budgets")

    def budget_values(self) -> list[float]:
        """The budgets in FLOPs, each a finite positive number."""
        out = []
        for text in self.budget_list():
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"scaling.budgets: '{text}' is not a number of FLOPs") from None
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"scaling.budgets: '{text}' must be a finite positive number of FLOPs")
            out.append(value)
        return out


@dataclass
class Params:
    """The whole params.yaml, every section typed."""

    data: str = doc("stories", "which entry of `datasets:` the pipeline prepares")
    model: str = doc("tiny", "size preset (tiny|small|medium|large|xl) or a model .yaml/.json")
    datasets: dict[str, DatasetConfig] = field(
        default_factory=lambda: {"stories": DatasetConfig()}, metadata={"help": "corpus definitions by name"}
    )
    prepare: PrepareConfig = field(default_factory=PrepareConfig, metadata={"help": "how data preparation runs"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "pretraining"})
    objectives: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "each architecture's own section (ar:, diffusion:, sdd:) as written, validated by "
            "`objective()` when a stage asks for it (a stage depends on its own section only); its `train:` "
            "mapping holds that architecture's pretraining values on top of `train:` (`train_for()`)"
        },
    )
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, metadata={"help": "the evaluate stage"})
    prep_instruct: PrepInstructConfig = field(
        default_factory=PrepInstructConfig, metadata={"help": "the prep_instruct stage"}
    )
    finetune: TrainConfig = field(
        default_factory=TrainConfig, metadata={"help": "fine-tuning: `train:` with the values of `finetune:` on top"}
    )
    evaluate_instruct: EvaluateInstructConfig = field(
        default_factory=EvaluateInstructConfig, metadata={"help": "the evaluate_instruct stage"}
    )
    scaling: ScalingConfig = field(
        default_factory=ScalingConfig, metadata={"help": "the scaling-study grid (pipelines/scaling)"}
    )
    source: str = doc("params.yaml", "the file these params were read from (named in error messages)")

    def dataset(self) -> DatasetConfig:
        """The dataset definition selected by `data`."""
        if self.data not in self.datasets:
            raise ConfigError(f"params: data '{self.data}' is not defined under datasets: ({', '.join(self.datasets)})")
        return self.datasets[self.data]

    def objective(self, architecture: str) -> Any:
        """The section of `architecture`, validated into its objective's Config."""
        # Imported here, not at the top: the objectives import this module (doc, build_dataclass).
        from lmcore.objectives import REGISTRY

        if architecture not in REGISTRY:
            raise ConfigError(f"architecture: unknown '{architecture}' (known: {', '.join(REGISTRY)})")
        section = {k: v for k, v in (self.objectives.get(architecture) or {}).items() if k != TRAIN_KEY}
        return build_dataclass(REGISTRY[architecture].Config, section, f"{self.source}: {architecture}")

    def train_for(self, architecture: str) -> TrainConfig:
        """Pretraining settings of `architecture`: `train:` with its section's `train:` values on top (the one
        override rule, as `finetune:`). Learning rate, batch and row length differ per architecture at equal
        compute (README, "How the defaults were chosen"); fine-tuning does not take them (it has `finetune:`)."""
        own = _mapping((self.objectives.get(architecture) or {}).get(TRAIN_KEY), f"{self.source}: {architecture}.train")
        return apply_overrides(self.train, own, f"{self.source}: {architecture}.train")


def unwrap_optional(tp: Any) -> Any:
    """A union's first member that is not None (`int | None` → int, `list[int] | str` → list[int]); others as is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value to the annotated type, with an error naming the key."""
    if value is None and type(None) in typing.get_args(tp):
        return None
    tp = unwrap_optional(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(tp) is list and typing.get_args(tp) == (int,):
        return int_list(value, where)
    return value


def build_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and wrong types by their dotted name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(section: T, overrides: dict[str, Any], where: str) -> T:
    """The one override rule: a copy of `section` with the non-None overrides (given flags, or `finetune:` on
    `train:`) put on top, converted and validated like params.yaml."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return build_dataclass(type(section), {**dataclasses.asdict(section), **values}, where)


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _scaling(raw: Any, where: str) -> ScalingConfig:
    """The `scaling:` section; its own checks (a size that is no preset, a budget that is no number) name the file."""
    try:
        return build_dataclass(ScalingConfig, raw, f"{where}: scaling")
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def parse_params(raw: dict[str, Any], where: str = "params.yaml") -> Params:
    """Validate a params mapping into Params; unknown keys and wrong types are errors naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    from lmcore.objectives import REGISTRY  # the names only: no objective module is imported

    plain = {f.name for f in dataclasses.fields(Params)} - {"objectives", "source"}
    known = plain | set(REGISTRY)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    datasets_raw = raw.get("datasets") or {}
    if not isinstance(datasets_raw, dict):
        raise ConfigError(f"{where}: datasets: expected a mapping of name -> definition")
    train = build_dataclass(TrainConfig, raw.get("train"), f"{where}: train")
    params = Params(
        data=_coerce(raw.get("data", "stories"), str, f"{where}: data"),
        model=_coerce(raw.get("model", "tiny"), str, f"{where}: model"),
        datasets={n: build_dataclass(DatasetConfig, d, f"{where}: datasets.{n}") for n, d in datasets_raw.items()}
        or {"stories": DatasetConfig()},
        prepare=build_dataclass(PrepareConfig, raw.get("prepare"), f"{where}: prepare"),
        train=train,
        objectives={n: _mapping(raw.get(n), f"{where}: {n}") for n in REGISTRY},
        evaluate=build_dataclass(EvaluateConfig, raw.get("evaluate"), f"{where}: evaluate"),
        prep_instruct=build_dataclass(PrepInstructConfig, raw.get("prep_instruct"), f"{where}: prep_instruct"),
        # No fine-tuning defaults in code: params.yaml's `finetune:` holds every value that differs from `train:`.
        finetune=apply_overrides(train, _mapping(raw.get("finetune"), f"{where}: finetune"), f"{where}: finetune"),
        evaluate_instruct=build_dataclass(
            EvaluateInstructConfig, raw.get("evaluate_instruct"), f"{where}: evaluate_instruct"
        ),
        scaling=_scaling(raw.get("scaling"), where),
    )
    params.source = where
    params.dataset()  # `data` must name a defined dataset
    for name in REGISTRY:  # per-architecture train values fail at load, like `train:` itself
        params.train_for(name)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; a missing file gives the built-in defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return parse_params(raw, where=str(path))
