"""The command line's plain errors: what a user fixes outside the code gets one line and exit code 2; anything
else keeps its traceback."""
import argparse

import pytest
from kafka import errors as kafka_errors

from streams import cli


def test_a_missing_file_is_one_line_before_kafka_is_touched(capsys):
    # Port 1: were Kafka tried first, this would wait for the bootstrap timeout and name Kafka instead.
    code = cli.main(["load", "--file", "/nonexistent/clicks.jsonl", "--format", "jsonl", "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["intentstream load: no such file: /nonexistent/clicks.jsonl"]


def test_verbose_keeps_the_traceback():
    with pytest.raises(FileNotFoundError):
        cli.main(["-v", "load", "--file", "/nonexistent/clicks.jsonl", "--format", "jsonl"])


def test_an_unreachable_broker_names_the_bootstrap_and_how_to_start_one():
    args = argparse.Namespace(bootstrap="127.0.0.1:1")
    reason = cli.plain_reason(kafka_errors.KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1"), args)
    assert reason is not None
    assert "Kafka at 127.0.0.1:1" in reason and "Unable to bootstrap" in reason and "intentstream kafka start" in reason


def test_a_bootstrap_from_the_environment_is_left_to_the_error_to_name():
    reason = cli.plain_reason(kafka_errors.KafkaTimeoutError("Unable to bootstrap from 10.0.0.7:9092"),
                              argparse.Namespace(bootstrap=None))
    assert reason.startswith("no answer from Kafka (") and "10.0.0.7:9092" in reason


def test_other_failures_are_not_explained_away():
    args = argparse.Namespace(bootstrap="127.0.0.1:9092")
    assert cli.plain_reason(ValueError("unknown format 'xml'"), args) is None
    assert cli.plain_reason(kafka_errors.TopicAuthorizationFailedError(), args) is None
