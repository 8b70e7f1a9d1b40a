"""Reading an official checkpoint and turning its state dict into ssmad's, refusing what does
not fit: every tensor is placed, checked against the model, or the conversion stops naming it.

Accepted files: ADer's training checkpoints (``{"net": state_dict, "optimizer": ...}``) or a
bare state dict, keys optionally prefixed by ``module.`` (DataParallel), each key starting with
the official model's part: ``net_t.`` (encoder), ``mff_oce.`` (bottleneck), ``net_s.`` (decoder).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ssmad.models import ModelConfig
from ssmad.modules.encoder_weights import find_state_dict
from ssmad.ops import SCAN_ORDERS, scan_order
from ssmad.official.keys import OLD_LAYOUT_BRANCHES, SCAN_TABLE, decoder_key, to_ssmad_directions

PARTS = ("net_t", "mff_oce", "net_s")
CHECKPOINT_KEYS = ("net", "state_dict", "model")
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # integer counters, irrelevant in eval mode
PYRAMID_TABLES = ("index_flat1", "index_flat2")  # only the Pyramid-Mamba code's HSCANS has them


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be read or placed into the ssmad model (names the key)."""


@dataclass
class ConvertedState:
    """An official state dict in ssmad's names and layouts.

    trainable: ``AnomalyModel.trainable_state_dict()`` keys ("bottleneck.*", "decoder.*");
    encoder: the encoder's state dict (torchvision names), None when the file holds no ``net_t``.
    """

    trainable: dict[str, Tensor]
    encoder: dict[str, Tensor] | None


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The official state dict in ``path`` (ADer checkpoint or bare), ``module.`` removed."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"no official checkpoint at {path}: pass the .pth file written by the official code")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe is None:
            raise OfficialCheckpointError(f"{path} is truncated or not a PyTorch file") from error
        raise OfficialCheckpointError(
            f"{path} holds Python objects besides tensors (e.g. a {unsafe.group(1)}), which are not loaded for safety. Fix: "
            "where you trust the file, save its state dict alone: torch.save(torch.load(FILE, weights_only=False)"
            "['net'], 'net.pth'), then convert net.pth"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise OfficialCheckpointError(f"{path} is truncated or not a PyTorch file ({type(error).__name__}: {error})") from error
    state_dict = find_state_dict(obj, CHECKPOINT_KEYS)
    if state_dict is None:
        raise OfficialCheckpointError(
            f"{path} holds no state dict (a mapping of names to tensors, itself or under {', '.join(CHECKPOINT_KEYS)})"
        )
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def split_parts(state_dict: Mapping[str, Tensor], source: str) -> dict[str, dict[str, Tensor]]:
    """{"net_t": ..., "mff_oce": ..., "net_s": ...} with the part prefixes removed.

    Refuses keys of no part and the older official layout (``conv33``/``conv1b3``/``conv1a3``).
    """
    parts: dict[str, dict[str, Tensor]] = {part: {} for part in PARTS}
    strays = []
    for key, value in state_dict.items():
        part, _, rest = key.partition(".")
        if part in parts and rest:
            parts[part][rest] = value
        else:
            strays.append(key)
    if strays:
        raise OfficialCheckpointError(
            f"{source}: {len(strays)} key(s) belong to no part of the official model (e.g. {', '.join(strays[:3])}); "
            f"every key must start with {', '.join(p + '.' for p in PARTS)} as in the official MAMBAAD's state_dict()"
        )
    old = sorted({branch for key in parts["net_s"] for branch in OLD_LAYOUT_BRANCHES if f".{branch}." in key})
    if old:
        raise OfficialCheckpointError(
            f"{source} has the older official layout (branches {', '.join(old)}), as the released MambaAD weights do: "
            "neither the current official code nor ssmad has these branches, so it cannot be converted without "
            "leaving weights out. Convert a checkpoint trained with the current official code"
        )
    if not parts["mff_oce"] or not parts["net_s"]:
        missing = [p for p in ("mff_oce", "net_s") if not parts[p]]
        raise OfficialCheckpointError(f"{source} has no {' and no '.join(missing)} keys: it is not an official MambaAD/Pyramid-Mamba model")
    return parts


def convert_state_dict(state_dict: Mapping[str, Tensor], config: ModelConfig, expected: Mapping[str, Tensor], source: str) -> ConvertedState:
    """Map an official state dict onto a model of ``config`` whose trainable state is ``expected``.

    Checks that the official scan tables (when present) are the order ``config`` scans in, that
    the number of directions agrees, and that every key lands on a key of the same shape.
    """
    parts = split_parts(state_dict, source)
    trainable: dict[str, Tensor] = {f"bottleneck.{k}": v for k, v in parts["mff_oce"].items()}
    origin = {f"bottleneck.{k}": f"mff_oce.{k}" for k in parts["mff_oce"]}
    tables: dict[str, Tensor] = {}
    unplaced = []
    for key, value in parts["net_s"].items():
        table = SCAN_TABLE.fullmatch(key)
        if table:
            tables[f"net_s.{key}"] = value
            continue
        ssmad_key = decoder_key(key)
        if ssmad_key is None:
            unplaced.append(f"net_s.{key}")
            continue
        trainable[ssmad_key] = value
        origin[ssmad_key] = f"net_s.{key}"
    if unplaced:
        raise OfficialCheckpointError(
            f"{source}: {len(unplaced)} decoder key(s) have no place in ssmad's model (e.g. {', '.join(unplaced[:3])}); "
            "the checkpoint comes from a modified official model"
        )
    _check_scan_tables(tables, config, source)
    _check_directions(trainable, origin, config, source)
    trainable = {k: to_ssmad_directions(k, v, config.num_directions) for k, v in trainable.items()}
    for key, value in expected.items():  # integer counters the file may lack
        if key.endswith(OPTIONAL_SUFFIXES) and key not in trainable:
            trainable[key] = torch.zeros_like(value)
    _check_fit(trainable, origin, expected, source)
    return ConvertedState(trainable, parts["net_t"] or None)


def _check_directions(trainable: dict[str, Tensor], origin: dict[str, str], config: ModelConfig, source: str) -> None:
    for key, value in trainable.items():
        if key.endswith(".x_proj_weight") and value.shape[0] != config.num_directions:
            raise OfficialCheckpointError(
                f"{source}: {origin[key]} has {value.shape[0]} scan directions, the model {config.num_directions}: "
                f"add --set num_directions={value.shape[0]}"
            )


def _table_order(name: str, table: Tensor) -> Tensor:
    """The visiting order a table stands for: index_flat* is the order, index_flat_inv* its inverse."""
    flat = table.reshape(-1).long()
    return torch.argsort(flat) if "_inv" in name else flat


def _check_scan_tables(tables: dict[str, Tensor], config: ModelConfig, source: str) -> None:
    """The official index tables must be the ssmad order ``config.scan_order`` on their square map."""
    pyramid_code = any(name.rsplit(".", 1)[-1].replace("_inv", "") in PYRAMID_TABLES for name in tables)
    if tables and pyramid_code != (config.pyramid_levels > 0):
        code, fix = ("Pyramid-Mamba", "--preset pyramid_mamba") if pyramid_code else ("MambaAD", "--preset mambaad, or --set pyramid_levels=0")
        raise OfficialCheckpointError(
            f"{source} was written by the official {code} code (its scan tables say so) but the model is "
            f"{'not ' if pyramid_code else ''}a pyramid one: use {fix}"
        )
    for name, table in tables.items():
        order = _table_order(name, table)
        side = int(round(order.numel() ** 0.5))
        if side * side != order.numel():
            raise OfficialCheckpointError(f"{source}: {name} ({order.numel()} entries) is not the table of a square map")
        if torch.equal(order, scan_order(config.scan_order, side, side)):
            continue
        matches = [kind for kind in SCAN_ORDERS if torch.equal(order, scan_order(kind, side, side))]
        fix = f"add --set scan_order={matches[0]}" if matches else "ssmad implements none that matches it"
        raise OfficialCheckpointError(
            f"{source}: {name} is not the {config.scan_order} order on a {side}x{side} map: {fix}"
        )


def _check_fit(trainable: dict[str, Tensor], origin: dict[str, str], expected: Mapping[str, Tensor], source: str) -> None:
    missing = [k for k in expected if k not in trainable]
    unexpected = [origin.get(k, k) for k in trainable if k not in expected]
    mis_shaped = [
        f"{origin.get(k, k)} {tuple(trainable[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in trainable and trainable[k].shape != v.shape
    ]
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
        for what, keys in (("missing in the file", missing), ("without a place in the model", unexpected), ("of another shape", mis_shaped))
        if keys
    ]
    if problems:
        raise OfficialCheckpointError(
            f"{source} does not fit the ssmad model: " + "; ".join(problems)
            + ". Choose the --preset, --encoder and --set values the checkpoint was trained with "
            "(e.g. --set decoder_depths=[3,4,6,3])"
        )
