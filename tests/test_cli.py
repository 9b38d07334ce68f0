"""The `genie2` command's argument checks: bad numbers, a port that cannot serve, --help and --version (issue 17)."""

import socket
from types import SimpleNamespace

import pytest
from fastapi import FastAPI

import genie2
import genie2.cli as cli
import genie2.world
from genie2.errors import InputError

EVAL = ["eval", "--checkpoint", "c", "--data", "d", "--out", "o"]
TOKENIZE = ["tokenize", "--data", "d", "--tokenizer", "t"]
TRAIN = ["train", "--data", "d", "--tokenizer", "t", "--out", "o"]


def refused(argv: list[str], capsys) -> str:
    """Run `genie2 ARGV`, check it exits with code 2, and return its last line of stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def no_world(monkeypatch):
    """Loading a world fails the test: the checks must refuse before it."""

    def load(*args, **kwargs):
        raise AssertionError("the world was loaded before the arguments were checked")

    monkeypatch.setattr(genie2.world, "load", load)


@pytest.fixture
def busy_port():
    """A port that a listening socket holds on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("value", ["-3", "0", "1.5", "many"])
def test_eval_episodes_must_be_positive(value, capsys, monkeypatch):
    monkeypatch.setattr(cli, "evaluate", lambda args: pytest.fail("eval ran"))
    line = refused([*EVAL, "--episodes", value], capsys)
    assert "--episodes" in line and "whole number >= 1" in line and value in line


@pytest.mark.parametrize("value", ["0", "-1"])
def test_tokenize_batch_size_must_be_positive(value, capsys, monkeypatch):
    monkeypatch.setattr(cli, "tokenize", lambda args: pytest.fail("tokenize ran"))
    line = refused([*TOKENIZE, "--batch-size", value], capsys)
    assert "--batch-size" in line and "whole number >= 1" in line


@pytest.mark.parametrize("flag", ["--temperature", "--cond-scale"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_play_sampling_numbers_must_be_finite(flag, value, capsys, no_world):
    line = refused(["play", f"{flag}={value}"], capsys)  # "--flag -inf" would read -inf as an option
    assert flag in line and "finite number" in line


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_eval_guidance_must_be_finite(value, capsys):
    line = refused([*EVAL, f"--cond-scale={value}"], capsys)
    assert "--cond-scale" in line and "finite number" in line


def test_sampling_numbers_still_parse():
    args = cli.build_parser().parse_args(["play", "--temperature", "0.5", "--cond-scale", "2"])
    assert (args.temperature, args.cond_scale) == (0.5, 2.0)
    assert cli.build_parser().parse_args([*EVAL, "--episodes", "3"]).episodes == 3


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_play_refuses_a_port_out_of_range_before_loading(port, capsys, no_world):
    line = refused(["play", "--port", port], capsys)
    assert line.startswith("genie2 play: error:") and "--port" in line and "65535" in line


def test_play_refuses_a_busy_port_before_loading(busy_port, capsys, no_world):
    line = refused(["play", "--port", str(busy_port)], capsys)
    assert line.startswith("genie2 play: error:") and f"port {busy_port}" in line and "in use" in line


def test_a_free_port_passes_the_check():
    from genie2.play.serve import check_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_port("127.0.0.1", port)  # nothing raised
    with pytest.raises(InputError, match="cannot serve"):
        check_port("no-such-host.invalid", port)


def test_serve_raises_when_the_server_cannot_start(busy_port):
    """A port taken between the check and the start still fails the command instead of returning."""
    from genie2.play.serve import serve

    app = FastAPI()
    app.state.play = SimpleNamespace(config=SimpleNamespace(max_message_bytes=1000), executor=None)
    with pytest.raises(InputError, match=f"127.0.0.1:{busy_port}"):
        serve(app, "127.0.0.1", busy_port, log_level="critical")


def test_play_help_shows_defaults_and_colour_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["play", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cond-scale COND_SCALE classifier-free guidance scale on the action (default 1" in text
    assert "auto" in text and "always" in text and "never" in text and "colour terminal" in text


@pytest.mark.parametrize(
    "verb, explained",
    [
        ("train", ["--decoding {raster,parallel}", "(default: the preset's, raster)", "--decode-steps", "default 8"]),
        ("eval", ["--decode-steps K passes per frame of a parallel (MaskGIT) model", "the model's"]),
        ("play", ["--decode-steps K passes per frame of a parallel (MaskGIT) model", "the page can"]),
        ("tokenize", ["--skip-corrupt skip damaged episode files", "--device DEVICE cpu or cuda (default: cuda"]),
    ],
)
def test_help_explains_the_decoding_and_shared_flags(verb, explained, capsys):
    with pytest.raises(SystemExit):
        cli.main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in explained:
        assert words in text, words


@pytest.mark.parametrize(
    "argv, flag",
    [
        ([*TRAIN, "--decoding", "diagonal"], "--decoding"),
        ([*TRAIN, "--decode-steps", "0"], "--decode-steps"),
        ([*EVAL, "--decode-steps", "0"], "--decode-steps"),
        (["play", "--decode-steps", "-2"], "--decode-steps"),
    ],
)
def test_decoding_flags_refuse_bad_values_before_running(argv, flag, capsys, no_world, monkeypatch):
    for verb in ("train", "evaluate", "play"):
        monkeypatch.setattr(cli, verb, lambda args: pytest.fail("the verb ran"))
    line = refused(argv, capsys)
    assert flag in line and ("whole number >= 1" in line or "invalid choice" in line), line


def test_train_sets_the_decoding_of_the_preset_model(monkeypatch):
    import genie2.train.world_model as world_model

    trained = []
    monkeypatch.setattr(world_model, "train", lambda *args, **kwargs: trained.append(args[4]))
    cli.main([*TRAIN, "--codes", "c", "--preset", "tiny", "--decoding", "parallel", "--decode-steps", "3"])
    cli.main([*TRAIN, "--codes", "c", "--preset", "tiny"])
    parallel, default = trained
    assert parallel.model == {**default.model, "decoding": "parallel", "decode_steps": 3}
    assert "decoding" not in default.model  # the preset's own (raster)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"genie2 {genie2.__version__}"


@pytest.mark.parametrize("verb", ["collect", "train-tokenizer", "tokenize", "train", "eval", "demo"])
def test_every_long_stage_has_quiet(verb):
    verbs = next(a for a in cli.build_parser()._actions if a.dest == "verb")
    assert "--quiet" in verbs.choices[verb].format_help(), f"genie2 {verb} has no --quiet"


def test_quiet_turns_the_tokenizer_stages_progress_off(monkeypatch, tmp_path):
    """--quiet reaches train-tokenizer's and tokenize's loops as progress=False."""
    import inspect

    import genie2.data.codes
    import genie2.tokenizer.train

    seen = []

    def spy(module, name, returns):
        """Replace module.name by a stand-in that records the `progress` it was called with."""
        signature = inspect.signature(getattr(module, name))
        record = lambda *a, **k: seen.append(signature.bind(*a, **k).arguments["progress"]) or returns  # noqa: E731
        monkeypatch.setattr(module, name, record)

    spy(genie2.tokenizer.train, "train_tokenizer", dict(psnr=1.0, usage=1.0, perplexity=1.0, frames_per_s=1.0))
    spy(genie2.data.codes, "encode_dataset", tmp_path)
    for argv in (["train-tokenizer", "--data", "d", "--out", "o"], ["tokenize", "--data", "d", "--tokenizer", "t"]):
        cli.main([*argv, "--quiet"])
        cli.main(argv)
    assert seen == [False, True, False, True]
