"""Publishing: the real HfApi code runs; only the HTTP transport is replaced, by an in-memory Hub.

huggingface_hub 2.x sends every request through one ``httpx2.Client`` built by a factory
(``huggingface_hub.utils._http.set_client_factory``): the test installs a client whose
transport is ``httpx2.MockTransport(FakeHubServer)``. Everything above it (``create_repo``,
README YAML validation, preupload, LFS batch + PUT + verify, the ndjson commit, the no-op
detection) is huggingface_hub's own code. Xet is switched off (``HF_HUB_DISABLE_XET``, a
documented switch) because hf_xet uploads from Rust, below any Python HTTP layer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx2
import pytest
import torch

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.cli import main as cli_main
from fdconv_zoo.errors import CatalogueError, HubError
from fdconv_zoo.hub import HUB_FILES, catalogue, push_to_hub

ENDPOINT = "https://huggingface.co"
TOKEN = "hf_test_write_token"
TAG = "fft_test_in1k"
SMALL = dict(num_classes=10, fd_include=["layer1.*"])  # a cheap resnet18_fdconv: FD layers in layer1 only


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHubServer:
    """The Hub's HTTP API as huggingface_hub uses it for create_repo + create_commit, in memory."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[str]] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.commit_payloads: list[list[dict]] = []

    # every request from huggingface_hub arrives here
    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/api/agent-harnesses":  # huggingface_hub's best-effort user-agent telemetry, not publishing
            return httpx2.Response(404, json={"error": "not here"})
        self.requests.append((request.method, path))
        assert request.url.host == "huggingface.co", request.url
        if not path.startswith("/fake-lfs/"):
            assert request.headers.get("authorization") == f"Bearer {TOKEN}", f"no token on {request.method} {path}"
        body = request.read()
        if request.method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            assert payload["type"] == "model"
            if repo_id in self.repos:
                return httpx2.Response(409, json={"error": "You already created this model repo",
                                                  "url": f"{ENDPOINT}/{repo_id}"})
            self.repos[repo_id], self.commits[repo_id] = {}, []
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/{repo_id}", "name": repo_id})
        if request.method == "POST" and path == "/api/validate-yaml":
            import yaml

            content = json.loads(body)["content"]
            meta = yaml.safe_load(content.split("---\n")[1])
            errors = [] if meta.get("library_name") == "timm" else [{"message": "library_name missing"}]
            return httpx2.Response(400 if errors else 200, json={"errors": errors, "warnings": []})
        if request.method == "POST" and "/preupload/" in path:
            repo_id = path.removeprefix("/api/models/").split("/preupload/")[0]
            files = self.repos[repo_id]
            out = []
            for f in json.loads(body)["files"]:
                lfs = f["path"].endswith(".safetensors")
                old = files.get(f["path"])
                oid = None if old is None else (hashlib.sha256(old).hexdigest() if lfs else _git_sha1(old))
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
            return httpx2.Response(200, json={"files": out, "commitOid": "0" * 40})
        if request.method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            payload = json.loads(body)
            assert payload["operation"] == "upload"
            objects = []
            for obj in payload["objects"]:
                item = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs:
                    item["actions"] = {"upload": {"href": f"{ENDPOINT}/fake-lfs/{obj['oid']}"},
                                       "verify": {"href": f"{ENDPOINT}/fake-lfs/{obj['oid']}/verify"}}
                objects.append(item)
            return httpx2.Response(200, json={"transfer": "basic", "objects": objects})
        if request.method == "PUT" and path.startswith("/fake-lfs/"):
            oid = path.split("/")[2]
            assert hashlib.sha256(body).hexdigest() == oid, "LFS upload content does not match its oid"
            self.lfs[oid] = body
            return httpx2.Response(200)
        if request.method == "POST" and path.startswith("/fake-lfs/") and path.endswith("/verify"):
            assert json.loads(body)["oid"] in self.lfs
            return httpx2.Response(200, json={})
        if request.method == "POST" and "/commit/" in path:
            repo_id = path.removeprefix("/api/models/").split("/commit/")[0]
            lines = [json.loads(line) for line in body.decode().splitlines() if line]
            self.commit_payloads.append(lines)
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    self.repos[repo_id][value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    self.repos[repo_id][value["path"]] = self.lfs[value["oid"]]
                else:
                    raise AssertionError(f"unexpected commit operation {line}")
            oid = hashlib.sha1(body).hexdigest()
            self.commits[repo_id].append(oid)
            return httpx2.Response(200, json={"commitUrl": f"{ENDPOINT}/{repo_id}/commit/{oid}", "commitOid": oid,
                                              "pullRequestUrl": None})
        if request.method == "GET" and path.startswith("/api/models/") and "/revision/" in path:
            repo_id = path.removeprefix("/api/models/").split("/revision/")[0]
            return httpx2.Response(200, json={"id": repo_id, "sha": self.commits[repo_id][-1], "private": False,
                                              "siblings": [{"rfilename": f} for f in self.repos[repo_id]]})
        return httpx2.Response(500, json={"error": f"FakeHubServer: unhandled {request.method} {path}"})


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHubServer:
    """Route all of huggingface_hub's HTTP to a :class:`FakeHubServer` (online mode, Xet off)."""
    import huggingface_hub.constants as hfc
    from huggingface_hub.utils import _http

    server = FakeHubServer()
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hfc, "ENDPOINT", ENDPOINT)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    _http.set_client_factory(lambda: httpx2.Client(
        transport=httpx2.MockTransport(server), event_hooks={"request": [_http.hf_request_event_hook]},
        follow_redirects=True, timeout=None))
    yield server
    _http.set_client_factory(_http.default_client_factory)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Fail the test on any HTTP request huggingface_hub makes (proves a code path is offline)."""
    from huggingface_hub.utils import _http

    attempts: list = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        attempts.append((request.method, str(request.url)))
        raise AssertionError(f"unexpected network access: {request.method} {request.url}")

    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(refuse)))
    yield attempts
    _http.set_client_factory(_http.default_client_factory)


@pytest.fixture(scope="module")
def small_model():
    import timm

    from fdconv_zoo.tools.testing import randomize_norms_

    torch.manual_seed(0)
    model = randomize_norms_(timm.create_model("resnet18_fdconv", **SMALL)).eval()
    with torch.no_grad():  # non-neutral FD parameters: the reload check must see them
        for name, p in model.named_parameters():
            if "KSM" in name or "FBM" in name:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def cat_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"org": "fdconv-zoo", "checkpoints": []}))
    return path


PUSH = dict(tag=TAG, converted_from="timm/resnet18.a1_in1k", gmacs=0.5, verify_input_size=(3, 32, 32))


def test_push_sends_exactly_the_staged_files(small_model, hub_server: FakeHubServer, cat_path: Path, tmp_path: Path):
    repo_id = f"fdconv-zoo/resnet18_fdconv.{TAG}"
    result = push_to_hub(small_model, token=TOKEN, catalogue_path=cat_path, staging_dir=tmp_path / "stage",
                         metrics={"imagenet-1k": {"top1": 12.5}}, **PUSH)
    assert result.repo_id == repo_id and not result.dry_run and result.commit_url.startswith(f"{ENDPOINT}/{repo_id}/")
    sha = result.sha256
    assert hub_server.requests == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{repo_id}/preupload/main"),
        ("POST", f"/{repo_id}.git/info/lfs/objects/batch"),
        ("PUT", f"/fake-lfs/{sha}"),
        ("POST", f"/fake-lfs/{sha}/verify"),
        ("POST", f"/api/models/{repo_id}/commit/main"),
    ]
    (commit,) = hub_server.commit_payloads
    assert commit[0]["key"] == "header" and sha[:12] in commit[0]["value"]["summary"]
    ops = {(line["key"], line["value"]["path"]) for line in commit[1:]}
    assert ops == {("file", "README.md"), ("file", "config.json"), ("lfsFile", "model.safetensors")}
    lfs_line = next(line["value"] for line in commit[1:] if line["key"] == "lfsFile")
    assert lfs_line["oid"] == sha and lfs_line["size"] == (tmp_path / "stage" / "model.safetensors").stat().st_size
    # what the Hub holds is byte-for-byte the staged folder
    stage = tmp_path / "stage"
    assert sorted(hub_server.repos[repo_id]) == sorted(HUB_FILES)
    for name in HUB_FILES:
        assert hub_server.repos[repo_id][name] == (stage / name).read_bytes()
    assert hashlib.sha256(hub_server.repos[repo_id]["model.safetensors"]).hexdigest() == sha
    # and the catalogue records it
    entry = catalogue.find_entry(repo_id, cat_path)
    assert entry["sha256"] == sha and entry["source"] == {"converted_from": "timm/resnet18.a1_in1k"}
    assert entry["metrics"] == {"imagenet-1k": {"top1": 12.5}} and entry["stats"]["gmacs"] == 0.5
    assert entry["model_args"]["fd_include"] == ["layer1.*"] and entry["model_args"]["num_classes"] == 10


def test_push_is_idempotent(small_model, hub_server: FakeHubServer, cat_path: Path, tmp_path: Path):
    repo_id = f"fdconv-zoo/resnet18_fdconv.{TAG}"
    push_to_hub(small_model, token=TOKEN, catalogue_path=cat_path, staging_dir=tmp_path / "a", **PUSH)
    cat_before = cat_path.read_bytes()
    hub_server.requests.clear()
    again = push_to_hub(small_model, token=TOKEN, catalogue_path=cat_path, staging_dir=tmp_path / "b", **PUSH)
    # repo exists (409 tolerated); the LFS object is already stored (batch answers without actions) and every
    # file's oid matches: no PUT, no commit, only the latest revision is read back
    assert hub_server.requests == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{repo_id}/preupload/main"),
        ("POST", f"/{repo_id}.git/info/lfs/objects/batch"),
        ("GET", f"/api/models/{repo_id}/revision/main"),
    ]
    assert len(hub_server.commits[repo_id]) == 1 and len(hub_server.commit_payloads) == 1
    assert again.commit_url.endswith(hub_server.commits[repo_id][0])
    assert cat_path.read_bytes() == cat_before


def test_push_refuses_to_replace_published_weights(small_model, hub_server: FakeHubServer, cat_path: Path,
                                                   tmp_path: Path):
    catalogue.record_checkpoint(catalogue.make_entry("resnet18_fdconv", TAG, sha256="ab" * 32,
                                                     converted_from="timm/resnet18.a1_in1k"), cat_path)
    with pytest.raises(CatalogueError, match="already published.*allow-update"):
        push_to_hub(small_model, token=TOKEN, catalogue_path=cat_path, staging_dir=tmp_path / "s", **PUSH)
    assert hub_server.requests == [], "nothing may be sent before the catalogue check"


def test_dry_run_needs_no_network(small_model, no_network: list, cat_path: Path, tmp_path: Path):
    before = cat_path.read_bytes()
    result = push_to_hub(small_model, dry_run=True, catalogue_path=cat_path, staging_dir=tmp_path / "s", **PUSH)
    assert result.dry_run and result.commit_url is None and no_network == []
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(HUB_FILES)
    assert result.entry["sha256"] == hashlib.sha256((tmp_path / "s" / "model.safetensors").read_bytes()).hexdigest()
    assert cat_path.read_bytes() == before, "--dry-run must not touch the catalogue"


def test_push_offline_says_what_to_do(small_model, fake_hub: Path, cat_path: Path, tmp_path: Path):
    with pytest.raises(HubError, match=r"(?s)network access and a write token.*--dry-run"):
        push_to_hub(small_model, token=TOKEN, catalogue_path=cat_path, staging_dir=tmp_path / "s", **PUSH)
    assert json.loads(cat_path.read_text())["checkpoints"] == []


def test_cli_push_dry_run_and_upload(small_model, hub_server: FakeHubServer, cat_path: Path, tmp_path: Path, capsys):
    from fdconv_zoo.checkpoints import save_safetensors

    ckpt = save_safetensors(small_model.state_dict(), tmp_path / "trained.safetensors")
    args = ["push", "--model", "resnet18_fdconv", "--tag", "fd_e1_in1k", "--checkpoint", str(ckpt),
            "--trained-with", "scripts/train.py --epochs 1 --lr 0.1", "--metric", "imagenet-1k:top1=1.5",
            "--num-classes", "10", "--model-args", json.dumps({"fd_include": ["layer1.*"]}),
            "--catalogue", str(cat_path), "--gmacs", "0.5", "--token", TOKEN]
    assert cli_main(args + ["--dry-run", "--staging-dir", str(tmp_path / "dry")]) == 0
    assert "dry run" in capsys.readouterr().out and hub_server.requests == []
    assert cli_main(args + ["--staging-dir", str(tmp_path / "real")]) == 0
    repo_id = "fdconv-zoo/resnet18_fdconv.fd_e1_in1k"
    assert sorted(hub_server.repos[repo_id]) == sorted(HUB_FILES)
    entry = catalogue.find_entry(repo_id, cat_path)
    assert entry["source"] == {"trained_with": {"script": "scripts/train.py", "args": ["--epochs", "1", "--lr", "0.1"]}}
    card = hub_server.repos[repo_id]["README.md"].decode()
    assert "python scripts/train.py --epochs 1 --lr 0.1" in card and "value: 1.5" in card
