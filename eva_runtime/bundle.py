"""The deployment bundle: a directory of hashed files plus `manifest.yaml`, written once and verified on every load.

A bundle holds the IDM (`idm.onnx`), the embodiment YAML it was trained for (`embodiment.yaml`), any extra files
by role (LoRA adapters later) and a manifest describing them: each file's SHA-256 and size, the embodiment, the
IDM's timing read from its ONNX metadata, the world-model reference and the reward constants. The manifest is
written last and atomically, so a directory without one is an unfinished bundle. Loading re-hashes every file and
refuses any disagreement (files, embodiment, IDM metadata, fps) with a :class:`BundleError` naming the bundle and
the field. No torch is imported here: this runs on the robot.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eva_runtime.atomic_file import write_text_atomically
from eva_runtime.config_files import load_yaml, parse_yaml, validate
from eva_runtime.embodiment import Embodiment, EmbodimentError, load_embodiment
from eva_runtime.file_hash import file_sha256
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.decoder import FORMAT as IDM_FORMAT

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Bundle",
    "BundleError",
    "Manifest",
    "bundle_content_sha256",
    "create_bundle",
    "load_bundle",
]

FORMAT = "eva-runtime/bundle-v1"
MANIFEST = "manifest.yaml"
IDM_FILE, EMBODIMENT_FILE = "idm.onnx", "embodiment.yaml"
# Roles of the two files every bundle has; extra files may not take them (nor the manifest's name).
RESERVED_ROLES = ("idm", "embodiment", "manifest")

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class BundleError(ValueError):
    """A bundle cannot be created or loaded; the message names the bundle path and the field."""


class _Strict(BaseModel):
    # extra="forbid": an unknown key in a manifest is a typo, and a typo in a deployment file must not pass silently.
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(_Strict):
    # No dots in a role: extra files are stored as <role><suffix>, which then cannot collide.
    role: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    path: str = Field(min_length=1)
    sha256: Sha256
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        # A manifest must not point outside its directory (absolute paths, `..`): it is data, not a file browser.
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts or "\\" in value:
            raise ValueError(f"must be a relative path inside the bundle, got {value!r}")
        return value


class EmbodimentEntry(_Strict):
    name: str = Field(min_length=1)
    joint_names: tuple[str, ...] = Field(min_length=1)
    control_rate_hz: Positive
    file: str
    sha256: Sha256


class IdmEntry(_Strict):
    file: str
    fps: Positive
    window: int = Field(ge=0)
    image_size: tuple[int, int]
    cameras: tuple[str, ...] = Field(min_length=1)
    joint_names: tuple[str, ...] = Field(min_length=1)
    data_digest: str
    checkpoint_sha256: str


class WanSampling(_Strict):
    steps: int = Field(10, ge=1)
    guidance: float = Field(1.0, ge=1.0, allow_inf_nan=False)
    history_frames: int = Field(1, ge=1)
    camera: str = Field("cam_high", min_length=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class WorldModelEntry(_Strict):
    kind: Literal["oracle", "wan"]
    id: str = Field(min_length=1)
    fps: Positive
    horizon: int = Field(ge=2)  # frame 0 is the conditioning frame: a horizon of 1 imagines nothing
    # Diffusers directory of the Wan base model: relative to the bundle, or absolute (a GPU server's disk).
    base: str | None = None
    # SHA-256 of the base directory's eva_hashes.json, which lists every file's hash: pins the exact base.
    base_sha256: Sha256 | None = None
    adapters: tuple[str, ...] = ()  # roles of bundled files (LoRA safetensors), applied in order
    sampling: WanSampling | None = None

    @model_validator(mode="after")
    def _base_matches_kind(self) -> WorldModelEntry:
        if self.kind == "wan" and not self.base:
            raise ValueError("a wan world model needs `base` (the diffusers base model reference)")
        if self.kind == "oracle" and (self.base is not None or self.adapters or self.sampling is not None):
            raise ValueError("the oracle world model takes no `base`, no `adapters` and no `sampling`")
        return self


class RewardEntry(_Strict):
    p0: Positive
    form: Literal["authors", "paper"] = "authors"
    gamma: Positive = 0.5


class Manifest(_Strict):
    format: Literal["eva-runtime/bundle-v1"]
    created: datetime
    software_version: str
    embodiment: EmbodimentEntry
    files: tuple[FileEntry, ...]
    idm: IdmEntry
    world_model: WorldModelEntry
    reward: RewardEntry

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.utcoffset() is None or value.utcoffset().total_seconds() != 0:
            raise ValueError(f"must be a UTC timestamp, got {value.isoformat()}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        roles = [entry.role for entry in self.files]
        paths = [entry.path for entry in self.files]
        if len(set(roles)) != len(roles) or len(set(paths)) != len(paths):
            raise ValueError(f"files: roles and paths must be unique; got roles {roles}, paths {paths}")
        by_role = {entry.role: entry for entry in self.files}
        for role, section in (("idm", self.idm), ("embodiment", self.embodiment)):
            if role not in by_role or by_role[role].path != section.file:
                raise ValueError(f"{role}.file: {section.file!r} must be listed in files with role {role!r}")
        if by_role["embodiment"].sha256 != self.embodiment.sha256:
            raise ValueError("embodiment.sha256 differs from the files entry of role 'embodiment'")
        unknown = [role for role in self.world_model.adapters if role not in by_role or role in RESERVED_ROLES]
        if unknown:
            raise ValueError(f"world_model.adapters: {unknown} are not extra files of the bundle")
        if self.idm.joint_names != self.embodiment.joint_names:
            raise ValueError(
                f"idm.joint_names {list(self.idm.joint_names)} differ from embodiment.joint_names "
                f"{list(self.embodiment.joint_names)}"
            )
        # One source of fps: the world model must imagine frames at the rate the IDM decodes them. The EVA
        # authors' code set the two separately and they drifted apart.
        if not math.isclose(self.world_model.fps, self.idm.fps, rel_tol=1e-9, abs_tol=0.0):
            raise ValueError(f"world_model.fps {self.world_model.fps} differs from idm.fps {self.idm.fps}")
        return self


@dataclass(frozen=True)
class Bundle:
    path: Path  # absolute bundle directory
    manifest: Manifest
    files: Mapping[str, Path]  # role -> absolute path, every file verified against its SHA-256
    embodiment: Embodiment  # parsed from the bundle's own embodiment.yaml
    manifest_sha256: str

    @property
    def idm_path(self) -> Path:
        return self.files["idm"]

    @property
    def world_model_base(self) -> Path | None:
        """The Wan base directory, resolved against the bundle directory when relative."""
        base = self.manifest.world_model.base
        return None if base is None else (self.path / base).resolve()

    def hashes(self) -> dict[str, str]:
        """role -> SHA-256 of every bundled file, for the episode log."""
        return {entry.role: entry.sha256 for entry in self.manifest.files}


def _idm_section(where: Path, idm_path: Path) -> IdmEntry:
    """The manifest's idm section as the ONNX file's own metadata states it."""
    # onnx directly rather than eva_runtime.idm.export.read_metadata: that module imports torch, which the
    # deployment side neither needs nor should pay seconds of start-up for.
    import onnx

    try:
        model = onnx.load(str(idm_path), load_external_data=False)
        metadata = {prop.key: prop.value for prop in model.metadata_props}
    except Exception as error:  # protobuf raises several unrelated types for a damaged file
        raise BundleError(f"{where}: idm: {idm_path.name} is not a readable ONNX file ({error})") from None
    if metadata.get("format") != IDM_FORMAT:
        raise BundleError(f"{where}: idm: format {metadata.get('format')!r}, expected {IDM_FORMAT!r}")
    try:
        config = IdmConfig.from_json(metadata["config"])
    except (KeyError, ValueError) as error:
        raise BundleError(f"{where}: idm: configuration missing or invalid in the ONNX metadata ({error})") from None
    timing = {key: getattr(config, key) for key in ("fps", "window", "image_size", "cameras", "joint_names")}
    provenance = {key: metadata.get(key, "") for key in ("data_digest", "checkpoint_sha256")}
    return IdmEntry(file=IDM_FILE, **timing, **provenance)


def _bundle_sources(
    out_dir: Path, idm_onnx: Path, embodiment_path: Path, extra_files: dict[str, Path] | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """role -> source file and role -> name inside the bundle, refused when a role is reserved or a file missing."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BundleError(f"{out_dir}: refusing to write a bundle into a non-empty directory (or a file)")
    sources = {"idm": Path(idm_onnx), "embodiment": Path(embodiment_path)}
    names = {"idm": IDM_FILE, "embodiment": EMBODIMENT_FILE}
    for role, source in (extra_files or {}).items():
        if role in RESERVED_ROLES:
            raise BundleError(f"{out_dir}: files: role {role!r} is reserved ({', '.join(RESERVED_ROLES)})")
        sources[role], names[role] = Path(source), f"{role}{Path(source).suffix}"
    missing = [f"{role} ({path})" for role, path in sources.items() if not path.is_file()]
    if missing:
        raise BundleError(f"{out_dir}: files: not found: {', '.join(missing)}")
    return sources, names


def _manifest_fields(
    out_dir: Path,
    sources: dict[str, Path],
    names: dict[str, str],
    world_model: dict[str, Any],
    reward: dict[str, Any],
) -> dict[str, Any]:
    """The manifest as plain data, read from the source files; validated by the caller."""
    from eva_runtime import __version__

    try:
        robot = load_embodiment(sources["embodiment"])
    except EmbodimentError as error:
        raise BundleError(f"{out_dir}: embodiment: {error}") from None
    # Plain dicts: they are validated (role names, paths) together with the rest of the manifest.
    files = {
        role: {"role": role, "path": names[role], "sha256": file_sha256(source), "bytes": source.stat().st_size}
        for role, source in sources.items()
    }
    idm = _idm_section(out_dir, sources["idm"])
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).replace(microsecond=0),
        "software_version": __version__,
        "embodiment": {
            "name": robot.name,
            "joint_names": robot.joint_names,
            "control_rate_hz": robot.control_rate_hz,
            "file": EMBODIMENT_FILE,
            "sha256": files["embodiment"]["sha256"],
        },
        "files": list(files.values()),
        "idm": idm,
        "world_model": {"fps": idm.fps, **world_model},  # fps defaults to the IDM's: one source of fps
        "reward": reward,
    }


def _write_bundle(out_dir: Path, manifest: Manifest, sources: dict[str, Path]) -> None:
    """Copy every file, check each copy against its hash, then write the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        target = out_dir / entry.path
        shutil.copyfile(sources[entry.role], target)
        # The hash in the manifest must describe the copy; a source rewritten meanwhile would make it lie.
        if file_sha256(target) != entry.sha256:
            raise BundleError(f"{out_dir}: files: {sources[entry.role]} changed while it was being copied")
    # Last, atomically: a bundle with a manifest is a complete bundle.
    write_text_atomically(out_dir / MANIFEST, yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False))


def create_bundle(
    out_dir: Path,
    idm_onnx: Path,
    embodiment_path: Path,
    world_model: dict[str, Any],
    reward: dict[str, Any],
    extra_files: dict[str, Path] | None = None,
) -> Manifest:
    """Write a bundle into `out_dir` (absent or empty); everything is validated before the first byte is written.

    `world_model`: kind, id, horizon, optional fps (default and only accepted value: the IDM's), base, adapters
    (roles in `extra_files`). `reward`: p0, optional form and gamma.
    """
    out_dir = Path(out_dir)
    sources, names = _bundle_sources(out_dir, idm_onnx, embodiment_path, extra_files)
    fields = _manifest_fields(out_dir, sources, names, world_model, reward)
    manifest = validate(out_dir, Manifest, fields, error=BundleError)
    _write_bundle(out_dir, manifest, sources)
    return manifest


def load_bundle(path: Path, embodiment: Embodiment | None = None) -> Bundle:
    """Read and verify a bundle; with `embodiment`, also refuse one built for a different robot."""
    path = Path(path).resolve()
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {MANIFEST} (not a bundle, or an unfinished one)")
    data = manifest_path.read_bytes()  # parsed and hashed from the same bytes
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BundleError(f"{manifest_path}: not valid UTF-8 ({error})") from None
    raw = parse_yaml(text, manifest_path, error=BundleError)
    if raw.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format: {raw.get('format')!r}, expected {FORMAT!r}")
    manifest = validate(manifest_path, Manifest, raw, error=BundleError)
    files: dict[str, Path] = {}
    for entry in manifest.files:
        file = path / entry.path
        if not file.is_file():
            raise BundleError(f"{path}: files: {entry.path} (role {entry.role}) is missing")
        if (actual := file_sha256(file)) != (expected := entry.sha256):
            raise BundleError(f"{path}: files: {entry.path} has SHA-256 {actual}, the manifest says {expected}")
        files[entry.role] = file
    try:
        robot = load_embodiment(files["embodiment"])
    except EmbodimentError as error:
        raise BundleError(f"{path}: embodiment: {error}") from None
    stated = manifest.embodiment
    for source, other in (("the bundled embodiment.yaml", robot), ("the given embodiment", embodiment)):
        if other is None:
            continue
        for field in ("name", "joint_names", "control_rate_hz"):
            given, expected = getattr(other, field), getattr(stated, field)
            if given != expected:
                raise BundleError(f"{path}: embodiment.{field}: the bundle has {expected!r}, {source} has {given!r}")
    world_model = manifest.world_model
    if world_model.base_sha256 is not None:
        listing = (path / world_model.base).resolve() / "eva_hashes.json"
        if not listing.is_file():
            raise BundleError(f"{path}: world_model.base: {listing} is missing")
        if (actual := file_sha256(listing)) != world_model.base_sha256:
            raise BundleError(
                f"{path}: world_model.base_sha256: {listing} has SHA-256 {actual}, the manifest says "
                f"{world_model.base_sha256}"
            )
    from_file = _idm_section(path, files["idm"])
    for field in IdmEntry.model_fields:
        stated_value, actual = getattr(manifest.idm, field), getattr(from_file, field)
        if actual != stated_value:
            raise BundleError(f"{path}: idm.{field}: the manifest says {stated_value!r}, the ONNX file says {actual!r}")
    return Bundle(path, manifest, MappingProxyType(files), robot, hashlib.sha256(data).hexdigest())


def bundle_content_sha256(path: Path) -> str:
    """What a bundle deploys, as one hash: its manifest without the creation time, in a canonical form. The manifest
    pins every file by its SHA-256, so two bundles built from the same files and settings share this hash however
    long apart they were built, and any change to a file or a setting changes it. (The manifest file's own hash,
    `Bundle.manifest_sha256`, also changes with the time of building.)"""
    fields = load_yaml(Path(path) / MANIFEST, what="the bundle manifest", error=BundleError)
    fields.pop("created", None)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
