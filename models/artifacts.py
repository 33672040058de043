"""Model artifacts: `weights.safetensors` + `meta.json` in one directory; loading never unpickles.

meta.json carries everything needed to rebuild and trust the model: format version, model version
("gru-<first 12 hex of the weights sha256>"), creation time, the feature spec and its hash, the architecture
config, normalization statistics, calibration, decision threshold, metrics, the training-data hash and the
sha256 of the weights file. `load` refuses (ArtifactError) a missing file, weights whose sha256 differs from
meta.json (tampered or corrupted), a feature spec this code does not produce (incompatible), or tensors
that do not fit the declared architecture.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU

log = logging.getLogger(__name__)

FORMAT = "intentstream-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


class ArtifactError(Exception):
    """The artifact cannot be used: missing, tampered, or incompatible with this code."""


@dataclass
class Artifact:
    model: IntentGRU          # eval mode, CPU
    meta: dict
    spec: FeatureSpec
    version: str              # "gru-<hash>", goes into IntentEvent.model_version
    threshold: float
    path: Path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save(model: IntentGRU, meta: dict, out_dir: str | os.PathLike, spec: FeatureSpec | None = None) -> str:
    """Write the artifact into `out_dir` (created); returns the model version.

    `meta` is the caller's metadata (metrics, threshold, training info, data hash); this function adds
    the fields it owns (format, version, spec, architecture, hashes, created_at) and overwrites them if
    present. `spec` defaults to FeatureSpec() sized like the model.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg: GRUConfig = model.config
    if spec is None:
        spec = FeatureSpec(n_item_buckets=cfg.n_item_buckets, n_category_buckets=cfg.n_category_buckets)
    if (spec.n_numeric, spec.n_rolling, spec.n_item_buckets, spec.n_category_buckets) != (
        cfg.n_numeric, cfg.n_rolling, cfg.n_item_buckets, cfg.n_category_buckets
    ):
        raise ArtifactError("model architecture does not match the feature spec it is saved with")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights_path = out / WEIGHTS_FILE
    tmp = weights_path.with_name(WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, weights_path)
    os.chmod(weights_path, 0o644)  # the writer uses a private temp file; artifacts are meant to be shared
    digest = sha256_file(weights_path)
    version = f"gru-{digest[:12]}"
    full = {
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": meta.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "feature_spec": spec.to_dict(),
        "spec_hash": spec.spec_hash(),
        "architecture": {"class": "IntentGRU", **cfg.to_dict()},
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": digest,
    }
    full.setdefault("threshold", 0.5)
    _atomic_write(out / META_FILE, json.dumps(full, indent=2, sort_keys=True).encode() + b"\n")
    log.info("saved model %s to %s", version, out)
    return version


def read_meta(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no meta.json (not a model directory)") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable metadata: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an {FORMAT} artifact")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {meta.get('format_version')}, this code reads {FORMAT_VERSION}")
    return meta


def load(model_dir: str | os.PathLike = DEFAULT_MODEL_DIR, expected_spec: FeatureSpec | None = None) -> Artifact:
    """Load and verify an artifact. `expected_spec`: the running FeatureSpec (default: the artifact's own
    spec must still hash the same under this code, i.e. this code produces the inputs it was trained on)."""
    d = Path(model_dir)
    meta = read_meta(d)
    weights_path = d / meta.get("weights_file", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: weights file missing")
    digest = sha256_file(weights_path)
    if digest != meta.get("weights_sha256"):
        raise ArtifactError(
            f"{weights_path}: sha256 {digest[:12]}... does not match meta.json "
            f"({str(meta.get('weights_sha256'))[:12]}...): the weights were modified or corrupted; refusing to load"
        )
    if meta.get("version") != f"gru-{digest[:12]}":
        raise ArtifactError(f"{d}: version {meta.get('version')!r} does not match the weights hash")
    try:
        spec = FeatureSpec.from_dict(meta["feature_spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{d}: bad feature_spec in meta.json: {e}") from None
    if spec.spec_hash() != meta.get("spec_hash"):
        raise ArtifactError(
            f"{d}: incompatible feature spec: the model was trained on spec {meta.get('spec_hash')}, this code "
            f"computes {spec.spec_hash()} for it (featurization changed); retrain the model"
        )
    if expected_spec is not None and expected_spec.spec_hash() != meta["spec_hash"]:
        raise ArtifactError(
            f"{d}: incompatible feature spec: model expects {meta['spec_hash']}, the running spec is "
            f"{expected_spec.spec_hash()} ({expected_spec.to_dict()['version']})"
        )
    try:
        arch = dict(meta["architecture"])
        if arch.pop("class", None) != "IntentGRU":
            raise ValueError("unknown architecture class")
        cfg = GRUConfig(**arch)
        model = IntentGRU(cfg)
        tensors = load_file(str(weights_path), device="cpu")  # safetensors: data only, nothing executes
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise ArtifactError(f"{d}: weights do not fit the declared architecture: {e}") from None
    model.eval()
    return Artifact(model=model, meta=meta, spec=spec, version=meta["version"],
                    threshold=float(meta["threshold"]), path=d)
