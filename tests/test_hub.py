"""Model resolution: bundled defaults, local paths, and Hub downloads against a real local HTTP server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import diffsep
from diffsep import hub
from diffsep.checkpoint import load_model_files, read_authors_checkpoint, save_model_folder
from diffsep.errors import ConfigError, ModelNotFoundError
from diffsep.hub import list_models, parse_repo_spec, resolve_model

try:  # tests/ as a package or as a plain folder on sys.path (pytest's default)
    from .fakehub import FakeHub
except ImportError:
    from fakehub import FakeHub  # type: ignore[no-redef]

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"
SEP = FIXTURES / "small-sep.ckpt"


@pytest.fixture(scope="module")
def sep_model():
    return read_authors_checkpoint(SEP)


@pytest.fixture(scope="module")
def our_files(sep_model, tmp_path_factory) -> dict[str, bytes]:
    folder = save_model_folder(tmp_path_factory.mktemp("model") / "m", *sep_model)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def fake_hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch, fake_hub) -> Path:
    """Point the Hub settings at the fake server, *after* huggingface_hub was imported.

    huggingface_hub read its settings at import time (endpoint https://huggingface.co, which
    cannot be reached here, and the default cache); the import-time cache is made wrong on
    purpose: diffsep must follow the environment as it is when it is called.
    """
    from huggingface_hub import constants

    cache_dir = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "import-time-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)  # never send a real token
    return cache_dir


# ---------------------------------------------------------------------------------------------
# Hub downloads
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a full model run or a large network: over a second
def test_downloads_our_format_once_then_uses_the_cache(
    fake_hub, cache, our_files, sep_model, tmp_path
):
    commit = fake_hub.add_repo("someone/diffsep-small", our_files)
    path = resolve_model("someone/diffsep-small", "separation")

    assert path.is_dir() and path.name == commit
    assert path.is_relative_to(cache)
    assert not (tmp_path / "import-time-cache").exists()
    assert sorted(p.name for p in path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert sorted(Path(p).name for p in fake_hub.downloads()) == sorted(our_files)
    config, weights = load_model_files(path)
    assert config == sep_model[0]
    assert set(weights) == set(sep_model[1])

    seen = len(fake_hub.requests)
    assert resolve_model("someone/diffsep-small", "separation") == path
    assert len(fake_hub.requests) == seen  # served from the cache, no request at all
    fake_hub.stop()
    assert resolve_model("someone/diffsep-small", "separation") == path


def test_downloads_the_authors_checkpoint(fake_hub, cache):
    fake_hub.add_repo(
        "fakufaku/diffsep", {"checkpoint.pt": SEP.read_bytes(), "README.md": b"# DiffSep\n"}
    )
    path = resolve_model("fakufaku/diffsep", "separation")

    assert path.name == "checkpoint.pt" and path.is_relative_to(cache)
    assert path.read_bytes() == SEP.read_bytes()
    assert [Path(p).name for p in fake_hub.downloads()] == ["checkpoint.pt"]
    assert ("HEAD", "/fakufaku/diffsep/resolve/main/config.json") in fake_hub.requests
    config, _ = load_model_files(path)
    assert config.task == "separation" and config.backbone.nf == 4

    fake_hub.stop()
    assert resolve_model("fakufaku/diffsep", "separation") == path


def test_offline_with_a_cached_model_needs_no_server(fake_hub, cache, our_files, monkeypatch):
    fake_hub.add_repo("someone/m", our_files)
    path = resolve_model("someone/m")
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("someone/m") == path


@pytest.mark.parametrize("switch", ["environment", "import-time"])
def test_offline_without_cache_says_how_to_get_the_model(fake_hub, cache, monkeypatch, switch):
    from huggingface_hub import constants

    fake_hub.add_repo("fakufaku/diffsep", {"checkpoint.pt": SEP.read_bytes()})
    if switch == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("fakufaku/diffsep", "separation")
    message = str(err.value)
    assert "\n" not in message
    assert "'fakufaku/diffsep'" in message and str(cache) in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "`hf download fakufaku/diffsep checkpoint.pt`" in message
    assert "--model /path/to/checkpoint.pt" in message
    assert fake_hub.requests == []


def test_unreachable_hub_without_cache(fake_hub, cache, monkeypatch):
    fake_hub.stop()
    waits: list[float] = []  # huggingface_hub's retry back-off would sleep here
    monkeypatch.setattr(time, "sleep", waits.append)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelNotFoundError, match="cannot be reached") as err:
        resolve_model("someone/model@v1", "separation")
    assert "'someone/model@v1'" in str(err.value)
    assert "hf download someone/model --revision v1" in str(err.value)
    assert "cannot connect to 127.0.0.1" in str(err.value) and waits == []
    # a host that cannot exist (RFC 2606): no lookup retries either
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    with pytest.raises(ModelNotFoundError, match="cannot resolve hub.invalid"):
        resolve_model("someone/model", "separation")
    assert waits == [] and fake_hub.requests == []


def test_endpoint_probe_defers_to_a_proxy(monkeypatch):
    from diffsep.hub import endpoint_unreachable

    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert endpoint_unreachable("http://hub.invalid") is None  # only a real request can tell
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("http_proxy", raising=False)
    assert endpoint_unreachable("http://hub.invalid") == "cannot resolve hub.invalid"


def test_revisions(fake_hub, cache, our_files):
    commit = fake_hub.add_repo("someone/m", our_files)
    assert resolve_model(f"someone/m@{commit}").name == commit
    with pytest.raises(ModelNotFoundError, match="'someone/m' has no revision 'nope'"):
        resolve_model("someone/m@nope")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, "'someone/absent' not found"),
        ({"README.md": b"hi"}, "holds no diffsep model"),
        ({"config.json": b"{}"}, "has config.json but no model.safetensors"),
    ],
)
def test_repos_without_a_model(fake_hub, cache, files, message):
    if files is not None:
        fake_hub.add_repo("someone/absent", files)
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model("someone/absent")


def test_download_reports_progress_and_prints_nothing(fake_hub, cache, our_files, capfd):
    fake_hub.add_repo("someone/m", our_files)
    reports: list[tuple[str, int, int | None]] = []
    resolve_model(
        "someone/m", on_progress=lambda name, done, total: reports.append((name, done, total))
    )
    size = len(our_files["model.safetensors"])
    assert (size, size) in {(done, total) for _, done, total in reports}
    assert all(done <= (total or done) for _, done, total in reports)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------------------------------------
# Local paths and invalid specs
# ---------------------------------------------------------------------------------------------


def test_existing_paths_are_returned_as_they_are(tmp_path, monkeypatch):
    folder = tmp_path / "owner" / "name"
    folder.mkdir(parents=True)
    assert resolve_model(folder) == folder
    assert resolve_model(str(SEP)) == SEP
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/owner/name") == folder
    monkeypatch.chdir(tmp_path)
    assert resolve_model("owner/name") == Path("owner/name")  # a local folder wins over a repo id


@pytest.mark.parametrize(
    "spec",
    [
        "./missing.ckpt",
        "/no/such/model",
        "missing.safetensors",
        "just-a-name",
        "a/b/c",
        "owner/name.ckpt",
        "a b/c",
    ],
)
def test_invalid_specs_name_themselves(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any network attempt would fail loudly
    with pytest.raises(ModelNotFoundError, match="no such file or folder") as err:
        resolve_model(spec, "separation")
    assert f"'{spec}'" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("fakufaku/diffsep", ("fakufaku/diffsep", None)),
        ("fakufaku/diffsep@main", ("fakufaku/diffsep", "main")),
        ("org-1/model.v2@refs/pr/3", ("org-1/model.v2", "refs/pr/3")),
        ("a/b/c", None),
        ("name", None),
        ("a--b/c", None),
        ("a/b@", None),
        ("-a/b", None),
    ],
)
def test_parse_repo_spec(spec, parsed):
    assert parse_repo_spec(spec) == parsed


# ---------------------------------------------------------------------------------------------
# Bundled models and the listing
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bundled_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "_models"
    root.mkdir()
    monkeypatch.setattr(hub, "_bundled_roots", lambda: [tmp_path / "not-installed", root])
    return root


def test_bundled_default_is_resolved(bundled_root, sep_model):
    folder = save_model_folder(bundled_root / "sep-8k", *sep_model)
    assert resolve_model(None, "separation") == folder
    assert resolve_model("diffsep-sep-8k", "enhancement") == folder
    assert load_model_files(resolve_model(None, "separation"))[0] == sep_model[0]


def test_missing_bundled_model_says_what_to_pass(bundled_root):
    (bundled_root / "enh-16k").mkdir()
    (bundled_root / "enh-16k" / "config.json").write_text("{}")  # incomplete: not a model
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(None, "enhancement")
    assert "'diffsep-enh-16k'" in str(err.value) and "--model" in str(err.value)
    with pytest.raises(ConfigError, match="unknown task 'karaoke'"):
        resolve_model(None, "karaoke")  # type: ignore[arg-type]


def test_list_models(bundled_root, sep_model, fake_hub, cache):
    save_model_folder(bundled_root / "sep-8k", *sep_model)
    rows = {row.name: row for row in list_models()}
    assert set(rows) == {"diffsep-sep-8k", "diffsep-enh-16k", "fakufaku/diffsep"}
    sep, enh, authors = rows["diffsep-sep-8k"], rows["diffsep-enh-16k"], rows["fakufaku/diffsep"]
    assert (sep.task, sep.sample_rate, sep.source, sep.default) == (
        "separation",
        8000,
        "bundled",
        True,
    )
    assert sep.available and sep.location == bundled_root / "sep-8k"
    assert (enh.task, enh.sample_rate, enh.available, enh.default) == (
        "enhancement",
        16000,
        False,
        True,
    )
    assert (authors.source, authors.available) == ("hub", False)

    fake_hub.add_repo("fakufaku/diffsep", {"checkpoint.pt": SEP.read_bytes()})
    downloaded = resolve_model("fakufaku/diffsep")
    rows = {row.name: row for row in list_models()}
    assert rows["fakufaku/diffsep"].location == downloaded


def test_bundled_roots_cover_wheel_and_source_checkout():
    roots = hub._bundled_roots()
    package = Path(diffsep.__file__).resolve().parent
    assert roots[0] == package / "_models"
    if package.parent.name == "src":  # running from a source checkout / editable install
        assert roots[1] == package.parent.parent / "models"
