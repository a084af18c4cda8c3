"""LoRA-Squeeze: how much of a trained LoRA adapter's update survives at a lower rank (docs/squeeze.md).

A LoRA layer adds `ΔW = s · B A` to a frozen weight (A: r×in, B: out×r in PEFT files, scale
`s = lora_alpha / r`). The singular values of `B A` say how much of that update a rank-k adapter
could keep: the variance retained at rank k is `V(k) = Σ_{i≤k} s_i² / Σ_i s_i²` (Eckart–Young: the
best rank-k approximation loses exactly the discarded energy). We never form the out×in product:
with `Aᵀ = Q_A R_A` and `B = Q_B R_B` (thin QR), `B A = Q_B (R_B R_Aᵀ) Q_Aᵀ`, so the singular values
of `B A` are those of the small r×r core `R_B R_Aᵀ`.

Example::

    result = analyze_adapter("logs/run/adapter/final", threshold=0.95)
    print(format_table(result))               # rank, mean/min/max % over layers, recommended marked
    compress_adapter("logs/run/adapter/final", result.recommended_rank, "squeezed/")
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrain.errors import RetrainError
from retrain.jsonio import apply_default_modes

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

# PEFT names a LoRA pair `<module>.lora_A.weight` / `<module>.lora_B.weight` (Linear, Conv) or
# `<module>.lora_embedding_A` / `<module>.lora_embedding_B` (Embedding); an adapter-name infix such
# as `.default` may sit between the factor and `.weight` in files saved by hand.
_A_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>embedding_)?A(?P<tail>(\.[^.]+)*)$")


# ---------------------------------------------------------------------------------------------
# Per-layer linear algebra (pure functions)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSVD:
    """Thin SVD of one layer's `B A` without the out×in product: `B A = U diag(s) Vᵀ`.

    `U = Q_B U_core` (out×n) and `V = Q_A V_core` (in×n), with `n = min(out, in, r)`.
    """

    U: torch.Tensor
    s: torch.Tensor
    V: torch.Tensor


def lora_svd(A_r_in: torch.Tensor, B_out_r: torch.Tensor) -> LoraSVD:
    """SVD of `B A` through QR of both factors (float64).

    `Aᵀ = Q_A R_A`, `B = Q_B R_B` (thin QR), so `B A = Q_B (R_B R_Aᵀ) Q_Aᵀ`; with the core's SVD
    `R_B R_Aᵀ = U_c S V_cᵀ`, `B A = (Q_B U_c) S (Q_A V_c)ᵀ`. Cost O((in + out)·r²), memory O((in + out)·r).
    """
    A = A_r_in.detach().to(torch.float64)
    B = B_out_r.detach().to(torch.float64)
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"LoRA factors must be A (r×in) and B (out×r); got A {tuple(A.shape)}, B {tuple(B.shape)}")
    Q_A, R_A = torch.linalg.qr(A.T, mode="reduced")
    Q_B, R_B = torch.linalg.qr(B, mode="reduced")
    U_c, s, Vh_c = torch.linalg.svd(R_B @ R_A.T, full_matrices=False)
    return LoraSVD(U=Q_B @ U_c, s=s, V=Q_A @ Vh_c.T)


def lora_singular_values(A_r_in: torch.Tensor, B_out_r: torch.Tensor) -> torch.Tensor:
    """Singular values of `B A` (descending, float64), from the r×r core only; see `lora_svd`."""
    return lora_svd(A_r_in, B_out_r).s


def variance_retained(s_n: Any, k: int) -> float:
    """`V(k) = Σ_{i≤k} s_i² / Σ_i s_i²` for descending singular values `s_n`.

    k beyond the number of values keeps everything (1.0). A zero update (PEFT initialises B to 0)
    loses nothing at any rank, so V = 1.0 there too.
    """
    energy = [float(x) ** 2 for x in s_n]
    total = sum(energy)
    if total <= 0.0:
        return 1.0
    return min(1.0, sum(energy[: max(k, 0)]) / total)


def truncated_factors(
    A_r_in: torch.Tensor, B_out_r: torch.Tensor, k: int, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-k LoRA factors `(A' k×in, B' out×k)` with `B' A' = scale · [B A]_k` (the rank-k truncation).

    The truncated SVD is split evenly, `B' = U_k √S_k · √scale`, `A' = √scale · √S_k V_kᵀ`, so both
    factors keep comparable norms (as LoRA training expects). When the layer has fewer than k
    singular values, the extra rows/columns are zero: the product is unchanged.
    """
    svd = lora_svd(A_r_in, B_out_r)
    n = min(k, svd.s.shape[0])
    root_S_n = torch.sqrt(svd.s[:n] * scale)
    B_new = torch.zeros(B_out_r.shape[0], k, dtype=torch.float64)
    A_new = torch.zeros(k, A_r_in.shape[1], dtype=torch.float64)
    B_new[:, :n] = svd.U[:, :n] * root_S_n
    A_new[:n, :] = root_S_n[:, None] * svd.V[:, :n].T
    return A_new, B_new


def default_target_ranks(source_rank: int) -> list[int]:
    """Powers of two below `source_rank`, plus `source_rank` itself: 32 → [1, 2, 4, 8, 16, 32]."""
    ranks = [1 << i for i in range(max(source_rank, 1).bit_length()) if (1 << i) < source_rank]
    return [*ranks, source_rank]


def recommend_rank(mean_by_rank: dict[int, float], threshold: float, source_rank: int) -> int:
    """Smallest rank whose mean retention ≥ threshold; `source_rank` when none reaches it."""
    passing = [k for k, v in sorted(mean_by_rank.items()) if v >= threshold]
    return passing[0] if passing else source_rank


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's `rank_pattern` / `alpha_pattern` lookup (peft.utils.other.get_pattern_key): the first
    key that matches the end of the module path on a dot boundary wins."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scale(r: int, alpha: float, use_rslora: bool) -> float:
    """PEFT's update scale: `alpha / r`, or `alpha / √r` with rsLoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


# ---------------------------------------------------------------------------------------------
# Adapter files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraPair:
    """One LoRA layer as stored: the module path and the keys/tensors of its two factors."""

    module: str
    a_key: str
    b_key: str
    A: torch.Tensor  # as stored: (r, in) or (r, in, kh, kw) for conv
    B: torch.Tensor  # as stored: (out, r) or (out, r, 1, 1) for conv

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(A r×in, B out×r)`; conv kernels are flattened into `in` (their B is 1×1)."""
        return self.A.reshape(self.rank, -1), self.B.reshape(self.B.shape[0], self.rank)


def _require_adapter_dir(path: str | os.PathLike[str]) -> Path:
    root = Path(path)
    if not root.exists():
        raise RetrainError(f"adapter not found: {root} (pass a PEFT adapter directory holding {ADAPTER_WEIGHTS})")
    if root.is_file() and root.name == ADAPTER_WEIGHTS:
        root = root.parent
    if not (root / ADAPTER_WEIGHTS).is_file():
        hint = (
            " (found adapter_model.bin: re-save it with safetensors)" if (root / "adapter_model.bin").exists() else ""
        )
        raise RetrainError(f"{root}: no {ADAPTER_WEIGHTS} in this directory{hint}; pass a PEFT adapter directory")
    return root


def load_adapter_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of `<path>/adapter_model.safetensors`, in file order."""
    from safetensors.torch import load_file

    return load_file(str(_require_adapter_dir(path) / ADAPTER_WEIGHTS))


def load_adapter_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`<path>/adapter_config.json` as a dict, or None when the adapter has none."""
    config_path = _require_adapter_dir(path) / ADAPTER_CONFIG
    if not config_path.is_file():
        return None
    return json.loads(config_path.read_text())


def pair_lora_tensors(tensors: dict[str, torch.Tensor]) -> list[LoraPair]:
    """Pair each `<module>.lora_A…` with its `<module>.lora_B…` (same suffix), in file order."""
    pairs = []
    for a_key, A in tensors.items():
        match = _A_KEY.match(a_key)
        if match is None:
            continue
        kind, tail = match["kind"] or "", match["tail"]
        b_key = f"{match['module']}.lora_{kind}B{tail}"
        if b_key not in tensors:
            raise RetrainError(f"adapter tensor {a_key} has no matching {b_key}; the adapter file is incomplete")
        pairs.append(LoraPair(module=match["module"], a_key=a_key, b_key=b_key, A=A, B=tensors[b_key]))
    if not pairs:
        raise RetrainError("no LoRA layers (lora_A/lora_B tensor pairs) in the adapter file; is it a LoRA adapter?")
    return pairs


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpectrum:
    """One layer's singular values of `B A` (unscaled, descending)."""

    module: str
    rank: int
    singular_values: tuple[float, ...]

    def retention(self, k: int) -> float:
        return variance_retained(self.singular_values, k)


@dataclass(frozen=True)
class RetentionRow:
    """Variance retained at one rank, as fractions in [0, 1], over all layers."""

    rank: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True)
class SqueezeResult:
    adapter_path: str
    source_rank: int
    threshold: float
    table: tuple[RetentionRow, ...]
    recommended_rank: int
    layers: tuple[LayerSpectrum, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON the campaign manifest stores (fractions, not percentages)."""
        return {
            "recommended_rank": self.recommended_rank,
            "source_rank": self.source_rank,
            "threshold": self.threshold,
            "table": [{"rank": r.rank, "mean": r.mean, "min": r.min, "max": r.max} for r in self.table],
            "adapter_path": self.adapter_path,
        }


def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, int | float) and 0.0 < float(threshold) <= 1.0):
        raise RetrainError(f"min_variance_retention must be in (0, 1], got {threshold!r} (e.g. 0.95)")
    return float(threshold)


def _check_target_ranks(target_ranks: list[int] | None, source_rank: int) -> list[int]:
    if not target_ranks:
        return default_target_ranks(source_rank)
    bad = [k for k in target_ranks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        raise RetrainError(f"target_ranks must be positive integers, got {bad} (e.g. [1, 2, 4, 8])")
    return sorted(set(target_ranks))


def analyze_adapter(
    path: str | os.PathLike[str], target_ranks: list[int] | None = None, threshold: float = 0.95
) -> SqueezeResult:
    """Variance retained by each LoRA layer at each target rank, and the recommended rank.

    Table rows: `mean/min/max over layers of V(k)`. Recommended = smallest target rank whose mean
    ≥ threshold (else the source rank, which keeps everything). `target_ranks` None or [] → powers
    of two up to the source rank (the largest layer rank), source rank included.
    """
    threshold = _check_threshold(threshold)
    root = _require_adapter_dir(path)
    pairs = pair_lora_tensors(load_adapter_tensors(root))
    layers = tuple(
        LayerSpectrum(p.module, p.rank, tuple(float(x) for x in lora_singular_values(*p.matrices()))) for p in pairs
    )
    source_rank = max(layer.rank for layer in layers)
    ranks = _check_target_ranks(target_ranks, source_rank)
    table = []
    for k in ranks:
        kept_L = [layer.retention(k) for layer in layers]
        table.append(RetentionRow(rank=k, mean=sum(kept_L) / len(kept_L), min=min(kept_L), max=max(kept_L)))
    recommended = recommend_rank({row.rank: row.mean for row in table}, threshold, source_rank)
    return SqueezeResult(
        adapter_path=str(root),
        source_rank=source_rank,
        threshold=threshold,
        table=tuple(table),
        recommended_rank=recommended,
        layers=layers,
    )


def format_table(result: SqueezeResult) -> str:
    """Console table: rank, mean/min/max % retained over layers, the recommended row marked."""
    lines = [
        f"LoRA-Squeeze: {result.adapter_path}",
        f"source rank {result.source_rank}, {len(result.layers)} LoRA layers, "
        f"threshold {result.threshold * 100:.1f}% mean variance retained",
        f"{'rank':>6}  {'mean %':>8}  {'min %':>8}  {'max %':>8}",
    ]
    for row in result.table:
        mark = "  <-- recommended" if row.rank == result.recommended_rank else ""
        lines.append(f"{row.rank:>6}  {row.mean * 100:>8.2f}  {row.min * 100:>8.2f}  {row.max * 100:>8.2f}{mark}")
    if all(row.mean < result.threshold for row in result.table):
        lines.append(f"No target rank reaches {result.threshold * 100:.1f}%; keeping the source rank.")
    lines.append(f"Recommended rank: {result.recommended_rank} (source rank {result.source_rank})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------------------


def _compressed_config(config: dict[str, Any], rank: int) -> dict[str, Any]:
    """`r = rank`, `lora_alpha × rank / r` (keeps alpha/r); per-module patterns cleared because the
    per-layer scale is folded into the factors (see `compress_adapter`)."""
    new = dict(config)
    alpha = config.get("lora_alpha", config["r"]) * rank / config["r"]
    new["r"] = rank
    new["lora_alpha"] = int(alpha) if float(alpha).is_integer() else alpha
    new["rank_pattern"] = {}
    new["alpha_pattern"] = {}
    return new


def compress_adapter(path: str | os.PathLike[str], rank: int, output: str | os.PathLike[str]) -> Path:
    """Write a PEFT adapter of rank `rank` at `output` (a new directory; never overwrites).

    Each layer becomes the rank-k truncated SVD of its scaled update: with the source layer's scale
    `s_l` (alpha/r, per `rank_pattern`/`alpha_pattern` and rsLoRA as PEFT computes it) and the new
    config's scale `s'` (`r = k`, `lora_alpha × k / r`), the factors satisfy
    `s' · B'A' = [s_l · B A]_k`, i.e. `truncated_factors(A, B, k, scale=s_l / s')`. At k = source
    rank this reproduces the adapter exactly (up to float rounding). Other tensors (modules_to_save,
    biases) are copied unchanged; tensors keep their dtype and key names.
    """
    from safetensors.torch import save_file

    root = _require_adapter_dir(path)
    out = Path(output)
    if out.exists():
        raise RetrainError(f"output {out} already exists; choose a new directory (squeeze never overwrites)")
    config = load_adapter_config(root)
    if config is None:
        raise RetrainError(f"{root}: no {ADAPTER_CONFIG}; compression needs it to write a loadable PEFT adapter")
    tensors = load_adapter_tensors(root)
    pairs = pair_lora_tensors(tensors)
    source_rank = max(p.rank for p in pairs)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= source_rank:
        raise RetrainError(f"compression rank must be an integer in [1, {source_rank}] (the source rank), got {rank!r}")

    new_config = _compressed_config(config, rank)
    use_rslora = bool(config.get("use_rslora", False))
    new_scale = lora_scale(rank, new_config["lora_alpha"], use_rslora)
    new_tensors = dict(tensors)
    for pair in pairs:
        r_l = _pattern_value(config.get("rank_pattern") or {}, pair.module, config["r"])
        alpha_l = _pattern_value(config.get("alpha_pattern") or {}, pair.module, config.get("lora_alpha", r_l))
        A_new, B_new = truncated_factors(*pair.matrices(), rank, scale=lora_scale(r_l, alpha_l, use_rslora) / new_scale)
        new_tensors[pair.a_key] = A_new.reshape(rank, *pair.A.shape[1:]).to(pair.A.dtype).contiguous()
        new_tensors[pair.b_key] = B_new.reshape(pair.B.shape[0], rank, *pair.B.shape[2:]).to(pair.B.dtype).contiguous()

    # Build in a sibling temp dir and rename, so a crash never leaves a half-written adapter.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(new_tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (staging / ADAPTER_CONFIG).write_text(json.dumps(new_config, indent=2, sort_keys=True) + "\n")
        provenance = {"source_adapter": str(root), "source_rank": source_rank, "rank": rank}
        (staging / "squeeze.json").write_text(json.dumps(provenance, indent=2) + "\n")
        apply_default_modes(staging)  # mkdtemp made it 0700, safetensors 0600: readable like any other output
        os.rename(staging, out)  # fails (rather than merging) if `out` appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------
# wandb and the standalone `[squeeze]` run
# ---------------------------------------------------------------------------------------------


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise RetrainError(
            "wandb logging is on ([logging].wandb_project is set) but wandb is not installed: "
            "run `pip install 'retrain[wandb]'` (or `pip install wandb`), or leave wandb_project empty"
        ) from exc
    return wandb


def log_squeeze_to_wandb(
    result: SqueezeResult, project: str, entity: str | None, mode: str | None, group: str | None = None
) -> None:
    """Log the squeeze table to a wandb run named `squeeze-analysis` (job_type `squeeze`).

    Records a `squeeze/variance_table` table (rank, mean/min/max as fractions, recommended), and
    summary keys `squeeze/{recommended_rank, source_rank, min_variance_retention, num_layers}`.
    """
    wandb = _import_wandb()
    run = wandb.init(
        project=project,
        entity=entity or None,
        group=group or None,
        name="squeeze-analysis",
        job_type="squeeze",
        tags=["squeeze", f"rank-{result.recommended_rank}"],
        mode=mode or None,
        config={"adapter_path": result.adapter_path, "min_variance_retention": result.threshold},
        reinit="create_new",  # never log into (or finish) a run the caller still has open
    )
    try:
        columns = ["rank", "mean_variance", "min_variance", "max_variance", "recommended"]
        rows = [[r.rank, r.mean, r.min, r.max, r.rank == result.recommended_rank] for r in result.table]
        run.log({"squeeze/variance_table": wandb.Table(columns=columns, data=rows)})
        run.summary["squeeze/recommended_rank"] = result.recommended_rank
        run.summary["squeeze/source_rank"] = result.source_rank
        run.summary["squeeze/min_variance_retention"] = result.threshold
        run.summary["squeeze/num_layers"] = len(result.layers)
    finally:
        run.finish()


def squeeze_and_report(
    adapter_path: str | os.PathLike[str],
    threshold: float,
    target_ranks: list[int] | None = None,
    compress_to: int = 0,
    output_path: str | os.PathLike[str] | None = None,
) -> tuple[SqueezeResult, Path | None]:
    """Analyse, print the table, and compress to `compress_to` (0 = recommended) when `output_path`."""
    result = analyze_adapter(adapter_path, target_ranks=target_ranks, threshold=threshold)
    print(format_table(result))
    written = None
    if output_path:
        rank = compress_to or result.recommended_rank
        written = compress_adapter(result.adapter_path, rank, output_path)
        print(f"Compressed adapter written to {written} (rank {result.source_rank} -> {rank})")
    return result, written


def run_from_config(cfg: Any) -> int:
    """Standalone squeeze for a TOML with `[squeeze]` and no `[campaign]` (returns the exit code).

    Reads `cfg.squeeze.{adapter_path, min_variance_retention, target_ranks, compress_to, output_path}`
    and logs to wandb when `cfg.logging.wandb_project` is set (and wandb_mode is not disabled).
    """
    sq = cfg.squeeze
    if sq is None or not sq.adapter_path:
        raise RetrainError(
            "[squeeze].adapter_path: a config with [squeeze] and no [campaign] is a standalone squeeze (it trains "
            'nothing) and needs the adapter to analyse, e.g. adapter_path = "logs/my_run/adapter/final"; '
            "to squeeze a campaign's first finished run, add the [campaign] table; to train, remove [squeeze]"
        )
    result, _ = squeeze_and_report(
        sq.adapter_path,
        threshold=sq.min_variance_retention,
        target_ranks=list(sq.target_ranks or []),
        compress_to=sq.compress_to,
        output_path=sq.output_path or None,
    )
    log = cfg.logging
    if log.wandb_project and log.wandb_mode != "disabled":  # disabled: don't even require wandb
        log_squeeze_to_wandb(
            result, log.wandb_project, log.wandb_entity, log.wandb_mode, group=getattr(log, "wandb_group", None)
        )
    return 0
