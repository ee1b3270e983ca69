"""Deployment bundles: a created bundle loads with the right values and hashes; tampered, swapped, missing or
mismatched files, an inconsistent fps, unknown manifest keys and a non-empty target are refused; the CLI round trip.

The IDM is a real export (a few training steps on the synthetic square dataset) whose joint names are the
simulated ALOHA's, so it belongs to calibration/aloha_sim.yaml.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from eva_runtime.bundle import FORMAT, BundleError, create_bundle, load_bundle
from eva_runtime.cli import app
from eva_runtime.embodiment import load_embodiment
from tests.conftest import CALIBRATION

ALOHA = CALIBRATION / "aloha_sim.yaml"
COBOT = CALIBRATION / "cobot_magic.yaml"
WORLD_MODEL = {"kind": "oracle", "id": "oracle:transfer_cube", "fps": 12.5, "horizon": 37}
REWARD = {"p0": 2000.0, "form": "authors", "gamma": 0.5}
runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle_dir(idm_onnx: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    create_bundle(out, idm_onnx, ALOHA, WORLD_MODEL, REWARD)
    return out


def edit_manifest(bundle: Path, change: Any) -> None:
    path = bundle / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_bundle_round_trip(idm_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    manifest = create_bundle(out, idm_onnx, ALOHA, WORLD_MODEL, REWARD)
    assert sorted(p.name for p in out.iterdir()) == ["embodiment.yaml", "idm.onnx", "manifest.yaml"]  # no temp file
    bundle = load_bundle(out, load_embodiment(ALOHA))
    assert bundle.manifest == manifest and bundle.path == out.resolve()
    assert bundle.manifest.format == FORMAT and bundle.manifest.created.utcoffset().total_seconds() == 0
    assert bundle.hashes() == {"idm": sha256(idm_onnx), "embodiment": sha256(ALOHA)}
    assert bundle.files == {"idm": out.resolve() / "idm.onnx", "embodiment": out.resolve() / "embodiment.yaml"}
    assert bundle.idm_path.read_bytes() == idm_onnx.read_bytes()
    assert bundle.manifest_sha256 == sha256(out / "manifest.yaml")
    robot = load_embodiment(ALOHA)
    assert bundle.embodiment == robot
    stated = bundle.manifest.embodiment
    assert (stated.name, stated.joint_names, stated.control_rate_hz) == ("aloha_sim", robot.joint_names, 50.0)
    assert stated.file == "embodiment.yaml" and stated.sha256 == sha256(ALOHA)
    idm = bundle.manifest.idm
    assert (idm.file, idm.fps, idm.window, idm.image_size) == ("idm.onnx", 12.5, 1, (32, 32))
    assert idm.cameras == ("cam_high",)
    assert idm.joint_names == robot.joint_names and len(idm.checkpoint_sha256) == 64 and idm.data_digest
    assert bundle.manifest.world_model.model_dump() == {
        **WORLD_MODEL,
        "base": None,
        "base_sha256": None,
        "adapters": (),
        "sampling": None,
    }
    assert bundle.manifest.reward.model_dump() == REWARD
    sizes = {entry.role: entry.bytes for entry in bundle.manifest.files}
    assert sizes == {"idm": idm_onnx.stat().st_size, "embodiment": ALOHA.stat().st_size}


def test_wan_bundle_with_an_adapter_and_default_fps(idm_onnx: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter_model.safetensors"
    adapter.write_bytes(b"stand-in adapter bytes")
    world_model = {"kind": "wan", "id": "wan2.2-ti2v-5b+lora", "horizon": 49, "base": "models/Wan2.2-TI2V-5B-Diffusers"}
    out = tmp_path / "bundle"
    create_bundle(out, idm_onnx, ALOHA, {**world_model, "adapters": ["lora"]}, {"p0": 1.5}, {"lora": adapter})
    bundle = load_bundle(out)
    assert bundle.files["lora"] == out.resolve() / "lora.safetensors"
    assert bundle.hashes()["lora"] == sha256(adapter)
    wm = bundle.manifest.world_model
    assert (wm.fps, wm.base, wm.adapters) == (12.5, "models/Wan2.2-TI2V-5B-Diffusers", ("lora",))  # fps: the IDM's
    assert bundle.manifest.reward.form == "authors" and bundle.manifest.reward.gamma == 0.5


def test_tampered_idm_is_refused_naming_the_file_and_both_hashes(bundle_dir: Path) -> None:
    target = bundle_dir / "idm.onnx"
    stated = sha256(target)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"idm\.onnx") as caught:
        load_bundle(bundle_dir)
    assert stated in str(caught.value) and sha256(target) in str(caught.value)
    assert str(bundle_dir.resolve()) in str(caught.value)


def test_swapped_embodiment_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "embodiment.yaml").write_bytes(COBOT.read_bytes())
    with pytest.raises(BundleError, match=f"embodiment.yaml has SHA-256 {sha256(COBOT)}, the manifest says"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("cobot_magic", r"embodiment\.name: the bundle has 'aloha_sim', the given embodiment has 'cobot_magic'"),
        ("rate", r"embodiment\.control_rate_hz: the bundle has 50\.0, the given embodiment has 100\.0"),
        ("joints", r"embodiment\.joint_names: the bundle has \('left_waist'.*the given embodiment has \('left_joint1'"),
    ],
)
def test_bundle_for_another_robot_is_refused(bundle_dir: Path, change: str, message: str) -> None:
    aloha, cobot = load_embodiment(ALOHA), load_embodiment(COBOT)
    robot = {
        "cobot_magic": cobot,
        "rate": aloha.model_copy(update={"control_rate_hz": 100.0}),
        "joints": cobot.model_copy(update={"name": "aloha_sim"}),
    }[change]
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir, robot)


@pytest.mark.parametrize(
    ("world_model", "reward", "message"),
    [
        ({**WORLD_MODEL, "fps": 25.0}, REWARD, r"world_model\.fps 25\.0 differs from idm\.fps 12\.5"),
        ({**WORLD_MODEL, "horizon": 1}, REWARD, r"world_model\.horizon: Input should be greater than or equal to 2"),
        (WORLD_MODEL, {**REWARD, "p0": 0.0}, r"reward\.p0: Input should be greater than 0"),
        (WORLD_MODEL, {**REWARD, "form": "papr"}, r"reward\.form: Input should be 'authors' or 'paper'"),
        ({**WORLD_MODEL, "horizn": 37}, REWARD, r"world_model\.horizn: unknown key"),
        ({**WORLD_MODEL, "kind": "wan"}, REWARD, r"a wan world model needs `base`"),
        (
            {**WORLD_MODEL, "adapters": ["lora"]},
            REWARD,
            r"oracle world model takes no `base`, no `adapters` and no `sampling`",
        ),
    ],
)
def test_create_refuses_inconsistent_settings_and_writes_nothing(
    idm_onnx: Path, tmp_path: Path, world_model: dict, reward: dict, message: str
) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(BundleError, match=message):
        create_bundle(out, idm_onnx, ALOHA, world_model, reward)
    assert not out.exists()


def test_create_refuses_an_idm_for_another_robot(idm_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"idm\.joint_names \['left_waist'.*differ from embodiment\.joint_names"):
        create_bundle(tmp_path / "bundle", idm_onnx, COBOT, WORLD_MODEL, REWARD)
    with pytest.raises(BundleError, match="role 'idm' is reserved"):
        create_bundle(tmp_path / "bundle", idm_onnx, ALOHA, WORLD_MODEL, REWARD, {"idm": ALOHA})
    with pytest.raises(BundleError, match=r"files\[2\]\(LoRA\)\.role: String should match pattern"):
        create_bundle(tmp_path / "bundle", idm_onnx, ALOHA, WORLD_MODEL, REWARD, {"LoRA": ALOHA})
    with pytest.raises(BundleError, match="not found: lora"):
        create_bundle(tmp_path / "bundle", idm_onnx, ALOHA, WORLD_MODEL, REWARD, {"lora": tmp_path / "absent"})
    assert not (tmp_path / "bundle").exists()


def test_create_refuses_a_non_empty_directory(idm_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="non-empty directory"):
        create_bundle(out, idm_onnx, ALOHA, WORLD_MODEL, REWARD)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    create_bundle(empty, idm_onnx, ALOHA, WORLD_MODEL, REWARD)  # an existing empty directory is fine
    with pytest.raises(BundleError, match="non-empty directory"):
        create_bundle(empty, idm_onnx, ALOHA, WORLD_MODEL, REWARD)  # and a second bundle on top is not


def test_missing_file_and_missing_manifest_are_refused(bundle_dir: Path) -> None:
    (bundle_dir / "idm.onnx").unlink()
    with pytest.raises(BundleError, match=r"files: idm\.onnx \(role idm\) is missing"):
        load_bundle(bundle_dir)
    (bundle_dir / "manifest.yaml").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.yaml"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(notes="x"), r"notes: unknown key"),
        (lambda m: m["world_model"].update(horizn=37), r"world_model\.horizn: unknown key"),
        (
            lambda m: m["files"][0].update(sha=m["files"][0]["sha256"]),
            r"files\[0\]\(idm\)\.sha: unknown key \(did you mean \'sha256\'\?\)",
        ),
        (lambda m: m.update(format="eva-runtime/bundle-v0"), r"format: 'eva-runtime/bundle-v0', expected"),
        (lambda m: m["world_model"].update(fps=25.0), r"world_model\.fps 25\.0 differs from idm\.fps 12\.5"),
        (
            lambda m: m["files"][0].update(path="../idm.onnx"),
            r"files\[0\]\(idm\)\.path: .*relative path inside the bundle",
        ),
        (lambda m: m["embodiment"].update(sha256="0" * 64), r"embodiment\.sha256 differs from the files entry"),
        (lambda m: m["reward"].update(p0=-1.0), r"reward\.p0: Input should be greater than 0"),
    ],
)
def test_edited_manifest_is_refused(bundle_dir: Path, change: Any, message: str) -> None:
    edit_manifest(bundle_dir, change)
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(bundle_dir)
    assert str(bundle_dir.resolve()) in str(caught.value)


def test_manifest_disagreeing_with_the_onnx_metadata_is_refused(bundle_dir: Path) -> None:
    """Moving both fps values together keeps the manifest self-consistent; the IDM file itself still says 12.5."""

    def both_fps(manifest: dict) -> None:
        manifest["idm"]["fps"] = manifest["world_model"]["fps"] = 25.0

    edit_manifest(bundle_dir, both_fps)
    with pytest.raises(BundleError, match=r"idm\.fps: the manifest says 25\.0, the ONNX file says 12\.5"):
        load_bundle(bundle_dir)


def test_repeated_manifest_key_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "manifest.yaml"
    path.write_text(path.read_text() + "format: eva-runtime/bundle-v1\n")
    with pytest.raises(BundleError, match="repeated key 'format'"):
        load_bundle(bundle_dir)


def test_cli_create_then_verify(idm_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    created = runner.invoke(app, ["bundle", "create", "--idm", str(idm_onnx), "--out", str(out), "--horizon", "25"])
    assert created.exit_code == 0, created.output
    assert "aloha_sim" in created.output and "horizon 25" in created.output and "12.5 fps" in created.output
    bundle = load_bundle(out)
    assert bundle.manifest.world_model.horizon == 25 and bundle.manifest.reward.p0 == 2000.0
    verified = runner.invoke(app, ["bundle", "verify", str(out), "--embodiment", str(ALOHA)])
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith("OK ")
    assert f"idm: {sha256(idm_onnx)}" in verified.output and f"embodiment: {sha256(ALOHA)}" in verified.output
    again = runner.invoke(app, ["bundle", "create", "--idm", str(idm_onnx), "--out", str(out)])
    assert again.exit_code == 2 and "non-empty directory" in again.output


def test_cli_verify_refuses_a_tampered_bundle_and_a_wrong_robot(bundle_dir: Path) -> None:
    wrong_robot = runner.invoke(app, ["bundle", "verify", str(bundle_dir), "--embodiment", str(COBOT)])
    assert wrong_robot.exit_code == 1 and "embodiment.name" in wrong_robot.output
    target = bundle_dir / "idm.onnx"
    target.write_bytes(target.read_bytes()[:-1] + bytes([target.read_bytes()[-1] ^ 0xFF]))
    result = runner.invoke(app, ["bundle", "verify", str(bundle_dir)])
    assert result.exit_code == 1
    assert "error:" in result.output and f"idm.onnx has SHA-256 {sha256(target)}" in result.output
    assert "OK" not in result.output


def test_the_content_hash_ignores_the_build_time_and_sees_every_setting(
    bundle_dir: Path, idm_onnx: Path, tmp_path: Path
) -> None:
    from eva_runtime.bundle import bundle_content_sha256

    first = bundle_content_sha256(bundle_dir)
    again = tmp_path / "again"
    create_bundle(again, idm_onnx, ALOHA, WORLD_MODEL, REWARD)
    edit_manifest(again, lambda data: data.__setitem__("created", "2020-01-01T00:00:00Z"))
    assert load_bundle(again).manifest_sha256 != load_bundle(bundle_dir).manifest_sha256
    assert bundle_content_sha256(again) == first  # the same files and settings, built at another time
    edit_manifest(again, lambda data: data["world_model"].__setitem__("horizon", data["world_model"]["horizon"] + 4))
    assert bundle_content_sha256(again) != first
    with pytest.raises(BundleError, match="manifest"):
        bundle_content_sha256(tmp_path / "no_bundle")
