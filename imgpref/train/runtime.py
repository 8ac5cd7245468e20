"""What every training recipe does the same way around its loop: the Accelerator, claiming the output
folder, the LoRA and its optimiser, resume and checkpoints, what follows each step (validation, guard,
SIGTERM), saving the result, and the error for a run of non-finite losses.

Under FSDP2 (``accelerate launch --config_file configs/accelerate/fsdp.yaml``) ``accelerator.prepare``
shards the denoiser in place with ``fully_shard`` (one group per transformer block), so the LoRA and its
optimiser state are DTensor shards. Whatever reads or writes them whole (checkpoints, the final LoRA,
the guard's restore) runs on every process: each all-gathers, then only the main process writes.
Validation images are made by every process of a multi-process run (FSDP or DDP), each its share
(:class:`~imgpref.train.validation.Validator`), so validation takes 1/N of the time instead of idling
N − 1 processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import broadcast_object_list
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from imgpref.config import ConfigError, save_config, to_dict
from imgpref.models.base import FamilyAdapter
from imgpref.models.lora import attach_lora, lora_parameters, lora_state_dict, save_lora, set_lora_state_dict
from imgpref.outdir import atomic_write_text, prepare_out_dir
from imgpref.train.checkpoint import gathered_optimizer_state, latest_checkpoint, load_checkpoint, save_checkpoint
from imgpref.train.metrics_log import MetricsLog
from imgpref.train.validation import Validator

#: Config keys that may differ when a run is resumed (everything else must match the saved config.yaml).
RESUMABLE_CHANGES = ("train.max_steps", "train.checkpoint_every", "train.log_every", "train.keep_checkpoints")
#: The FSDP generation imgpref supports (torch.distributed.fsdp.fully_shard, DTensor parameters).
FSDP_VERSION = 2


def make_accelerator(*, mixed_precision: str, cpu: bool, grad_accum: int = 1) -> Any:
    """The recipes' ``Accelerator``: processes, devices and FSDP come from ``accelerate launch``.

    FSDP on CPU processes: accelerate turns FSDP on only for accelerator devices (its state keeps a
    multi-process CPU run as ``MULTI_CPU``, i.e. DDP, even when launched with ``--use_fsdp``), because
    FSDP1 needs a GPU. FSDP2's ``fully_shard`` also runs over gloo on CPU, so a CPU launch that asks for
    FSDP2 gets it here, set up as accelerate does for GPUs (the plugin from the launch's FSDP_*
    variables, ``distributed_type = FSDP``). This is what the CPU tests of the FSDP path use. FSDP1 is
    refused: imgpref saves and loads sharded LoRA state as FSDP2 DTensors."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    accelerator = _accelerator_class()(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum, cpu=cpu)
    state = accelerator.state
    fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_asked and state.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables accelerate launch sets
        _require_fsdp2(plugin.fsdp_version)
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin = plugin
        # Both states, as AcceleratorState does (a later AcceleratorState() copies PartialState's type back).
        state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    elif state.distributed_type == DistributedType.FSDP:
        _require_fsdp2(state.fsdp_plugin.fsdp_version)
    return accelerator


def _accelerator_class() -> type:
    """``Accelerator`` whose ``clip_grad_norm_`` returns a plain tensor under FSDP2 too (torch returns the
    norm of DTensor gradients as a DTensor, which the recipes' metric reductions cannot take)."""
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    class RecipeAccelerator(Accelerator):
        def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
            norm = super().clip_grad_norm_(parameters, max_norm, norm_type=norm_type)
            return norm.full_tensor() if isinstance(norm, DTensor) else norm

    return RecipeAccelerator


def _require_fsdp2(version: int) -> None:
    if version != FSDP_VERSION:
        raise ConfigError(
            f"accelerate was launched with FSDP version {version}; imgpref trains LoRA under FSDP2 only: set "
            "fsdp_config.fsdp_version: 2 in the accelerate config (see configs/accelerate/fsdp.yaml) or pass "
            "--fsdp_version 2"
        )


def is_fsdp(accelerator: Any) -> bool:
    """Whether the run shards the denoiser with FSDP (then whole-LoRA reads and writes are collective)."""
    return bool(getattr(accelerator, "is_fsdp2", False))


def check_resume_config(out: Path, config: Any, allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
    """Refuse to resume a run in ``out`` whose saved config differs in keys other than ``allowed``."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved, now = flatten(yaml.safe_load(saved_path.read_text())), flatten(to_dict(config))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in allowed)
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ConfigError(
            f"--out {str(out)!r} holds a run with a different config ({detail}); resume it with the same "
            f"config (only {', '.join(allowed)} may change) or pass a new --out"
        )


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b.c": value}."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for k, v in tree.items():
            flat.update(flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: tree}


class StopSignal:
    """Turns SIGTERM into a flag checked at step boundaries (save, then exit cleanly)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopSignal:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, training still works
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def restore_lora(model: FamilyAdapter, out: Path, step: int | None, say) -> None:
    """Load the LoRA of the last checkpoint that passed the guard (zeros: the base model). Every process
    calls it."""
    from imgpref.train.checkpoint import checkpoint_dir

    if step is None:
        lora = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in lora_state_dict(model).items()}
        set_lora_state_dict(model, lora)
        say("guard: no checkpoint passed; the saved LoRA is the base model (lora_B = 0)")
        return
    from safetensors.torch import load_file

    lora = load_file(str(checkpoint_dir(out, step) / "lora.safetensors"))
    set_lora_state_dict(model, lora)
    say(f"guard: restored the LoRA of step {step}, the last checkpoint that passed")


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's wrapper (whose state dict is what a checkpoint holds)."""
    return getattr(optimizer, "optimizer", optimizer)


class Checkpointer:
    """Resume a run from its latest checkpoint and save new ones (LoRA, optimiser, LR scheduler, RNG, the
    artifact guard's state), the same way for every recipe. Every process gathers the (possibly sharded)
    LoRA and optimiser state, the main process writes, every process waits for it."""

    def __init__(
        self,
        out: Path,
        model: FamilyAdapter,
        optimizer: Any,
        scheduler: Any,
        accelerator: Any,
        *,
        validator: Any = None,
        keep: int,
    ) -> None:
        self.out, self.model, self.optimizer, self.scheduler = out, model, optimizer, scheduler
        self.accelerator, self.validator, self.keep = accelerator, validator, keep
        self.found = False

    def resume(self, say: Callable[[str], None], resumed: bool) -> int:
        """Load the latest complete checkpoint if there is one; return the step to continue from."""
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            if resumed:
                say(f"--out {str(self.out)!r} holds an earlier run without a checkpoint: starting from step 0")
            return 0
        lora, state = load_checkpoint(ckpt, inner_optimizer(self.optimizer), self.scheduler)
        set_lora_state_dict(self.model, lora)
        if self.validator is not None and "guard" in state:
            self.validator.guard.load_state_dict(state["guard"])
        self.found = True
        say(f"resuming from {ckpt} (step {int(state['step'])})")
        return int(state["step"])

    def save(self, step: int) -> None:
        """Write checkpoint ``step`` (atomically; older ones beyond ``keep`` are pruned)."""
        guard = self.validator.guard if self.validator is not None else None
        lora = lora_state_dict(self.model)  # all-gathers under FSDP: on every process
        optimizer_state = gathered_optimizer_state(inner_optimizer(self.optimizer))
        if self.accelerator.is_main_process:
            save_checkpoint(
                self.out,
                step,
                lora=lora,
                optimizer_state=optimizer_state,
                scheduler=self.scheduler,
                state={"guard": guard.state_dict()} if guard is not None else {},
                keep=self.keep,
                protect=guard.last_passing_checkpoint() if guard is not None else None,
            )
            if guard is not None:
                guard.note_checkpoint(step)
        self.accelerator.wait_for_everyone()


def open_run(out_dir: str | Path, command: str, config: Any, accelerator: Any) -> tuple[Path, bool, Callable]:
    """Claim or resume ``out_dir`` on the main process (refusing a changed config) and return it, whether
    an earlier run is resumed, and ``say`` (prints on the main process only, without breaking progress bars)."""
    out, resumed = Path(out_dir), False
    if accelerator.is_main_process:
        out, resumed = prepare_out_dir(out, command, resumable=True)
        check_resume_config(out, config)
    accelerator.wait_for_everyone()
    return out, resumed, tqdm.write if accelerator.is_main_process else (lambda *_: None)


def load_run_model(config: Any, accelerator: Any) -> FamilyAdapter:
    """The run's base model on its device; the main process resolves ``model.path`` first (it builds the
    toy model on first use), the others then find it."""
    from imgpref.models import load_model

    with accelerator.main_process_first():
        path = config.model.resolve_path()
    device = accelerator.device if config.model.device == "auto" else config.model.resolve_device()
    return load_model(config.model.family, path, dtype=config.model.torch_dtype, device=device)


def make_validator(
    config: Any, model: FamilyAdapter, accelerator: Any, out: Path, size: tuple[int, int]
) -> Validator | None:
    """The run's validator when ``validation.every`` > 0 (every process calls it; several share the work)."""
    if not config.validation.every:
        return None
    return Validator(
        model,
        config.validation,
        config.guard,
        is_toy=config.model.is_toy,
        size=size,
        out=out,
        accelerator=accelerator,
    )


def start_run(
    out: Path,
    config: Any,
    checkpoints: Checkpointer,
    validator: Any,
    accelerator: Any,
    *,
    resumed: bool,
    say: Callable[[str], None],
) -> tuple[int, MetricsLog]:
    """Resume from the latest checkpoint (or start at 0), save the resolved config, open the metrics log
    (cut back to the resumed step) and, on a fresh start, validate the base model as step 0. Returns the
    step to continue from and the log."""
    main = accelerator.is_main_process
    start_step = checkpoints.resume(say, resumed)
    if main:
        save_config(config, out / "config.yaml")
    log = MetricsLog(out, enabled=main, resume_step=start_step if (checkpoints.found or resumed) else None)
    if validator is not None and start_step == 0:
        metrics, _ = validator.run(0)
        log.log(0, metrics)
    return start_step, log


def train_lora(
    model: FamilyAdapter, config: Any, accelerator: Any, num_training_steps: int
) -> tuple[list[torch.nn.Parameter], Any, Any, torch.nn.Module]:
    """Attach the LoRA (initialised from ``train.seed``), build AdamW and the LR schedule, prepare the
    denoiser with accelerate and route ``predict`` through it: (params, optimizer, scheduler, wrapped).

    ``params`` are read after ``prepare``: FSDP2 replaces each parameter by a DTensor shard."""
    # peft draws the LoRA's A matrices from the global RNG, whose start state differs per process.
    torch.manual_seed(config.train.seed)
    params = attach_lora(model, config.lora)
    if config.train.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
    model.denoiser.train()
    opt = config.optim
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, eps=opt.eps)
    scheduler = get_scheduler(
        opt.schedule, optimizer, num_warmup_steps=opt.warmup_steps, num_training_steps=num_training_steps
    )
    wrapped, optimizer = accelerator.prepare(model.denoiser, optimizer)
    model.set_forward_module(wrapped)
    if is_fsdp(accelerator) and accelerator.is_main_process:
        from torch.distributed.fsdp import FSDPModule

        groups = sum(isinstance(m, FSDPModule) for m in model.denoiser.modules())
        tqdm.write(f"FSDP2: the denoiser is sharded over {accelerator.num_processes} processes in {groups} groups")
    return lora_parameters(model), optimizer, scheduler, wrapped


def after_step(
    done: int,
    last: int,
    *,
    accelerator: Any,
    validator: Any,
    log: Any,
    checkpoints: Checkpointer,
    model: FamilyAdapter,
    say: Callable[[str], None],
    stop_requested: bool,
    checkpoint_every: int,
) -> str | None:
    """What follows every optimiser step: validation and the artifact guard when due, SIGTERM, periodic
    checkpoints. Returns why the run stops (``"guard"``, ``"interrupted"``) or None to go on; every
    process gets the same answer."""
    decision = None
    if validator is not None and validator.due(done, last):
        metrics, decision = validator.run(done)  # every process takes part; results on the main one only
        log.log(done, metrics)  # a no-op on the other processes; the guard logs its own warning when it trips
        # The main process decided; every process acts on it (and loads a restored LoRA into its shards).
        (decision,) = broadcast_object_list([decision])
        if decision is not None and decision.should_stop:
            checkpoints.save(done)
            if decision.action == "restore":
                restore_lora(model, checkpoints.out, decision.restore_step, say)
            return "guard"
    flag = torch.tensor(float(stop_requested), device=accelerator.device)
    if accelerator.reduce(flag).item() > 0:
        checkpoints.save(done)
        say(f"stopped at step {done}: checkpoint saved; run the same command again to resume")
        return "interrupted"
    if checkpoint_every and done % checkpoint_every == 0 and done < last:
        checkpoints.save(done)
    return None


def finish_run(
    summary: dict[str, Any], *, model: FamilyAdapter, accelerator: Any, checkpoints: Checkpointer, say: Callable
) -> dict[str, Any]:
    """Unless interrupted: a final checkpoint (when the run ended normally), the LoRA in diffusers format
    and ``train_summary.json``."""
    out = checkpoints.out
    if summary["stopped"] != "interrupted":
        if summary["stopped"] is None:
            checkpoints.save(summary["steps"])
        lora = lora_state_dict(model)  # all-gathers under FSDP: on every process
        if accelerator.is_main_process:
            save_lora(model, out / "lora", lora)
            atomic_write_text(out / "train_summary.json", yaml.safe_dump(summary))
        say(f"LoRA saved to {out / 'lora'} (diffusers format: pipe.load_lora_weights({str(out / 'lora')!r}))")
    accelerator.wait_for_everyone()
    return summary
