"""The audit trail (``audit_logs_target``, ``audit_logs_json_target``; reference §B.1, §I.3):
one record per command that changes the daemon, naming who sent it (uid, gid, pid and command
name of the peer), the verb, the target, the result and the fan-out; files of mode 0640; never
a private key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend
from support.certs import make_certificate
from support.daemon import DaemonProcess, free_port

from sozu_config import (
    AddCertificate,
    AddCluster,
    CertificateAndKey,
    Cluster,
    QueryState,
    RemoveCluster,
    Status,
)

pytestmark = pytest.mark.e2e


def test_every_change_is_recorded_with_its_sender_and_outcome(tmp_path: Path) -> None:
    http, https = free_port(), free_port()
    with HttpBackend("app") as backend:
        config = configs.document(
            configs.http_listener(http),
            configs.https_listener(https),
            configs.cluster(
                "app",
                frontends=[configs.frontend(http, "app.example")],
                backends=[configs.backend(backend.address)],
            ),
            worker_count=2,
            audit_logs_target="audit.log",
            audit_logs_json_target="audit.jsonl",
        )
        made = make_certificate("secure.example")
        key_text = made.key_pem
        with DaemonProcess(tmp_path, config).start() as daemon:
            assert daemon.send(AddCluster(cluster=Cluster(cluster_id="blog"))).ok
            assert not daemon.send(RemoveCluster(cluster_id="absent")).ok
            assert daemon.send(Status()).ok  # a query: not audited
            assert daemon.send(QueryState()).ok
            added = daemon.send(
                AddCertificate(
                    address=f"127.0.0.1:{https}",
                    certificate=CertificateAndKey(certificate=made.cert_pem, key=key_text),
                )
            )
            assert added.ok, added.message

    text_log, json_log = tmp_path / "audit.log", tmp_path / "audit.jsonl"
    for path in (text_log, json_log):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        content = path.read_text()
        assert "PRIVATE KEY" not in content and key_text.splitlines()[1] not in content

    records = [json.loads(line) for line in json_log.read_text().splitlines()]
    # the soft stop of the test's teardown is a signal, not a command: three records
    assert [(r["verb"], r["result"]) for r in records] == [
        ("add_cluster", "ok"),
        ("remove_cluster", "failure"),
        ("add_certificate", "ok"),
    ]
    first, refused, certificate_record = records
    assert first["target"] == "blog"
    assert (first["uid"], first["gid"], first["pid"]) == (os.getuid(), os.getgid(), os.getpid())
    assert first["comm"]  # this test process's command name
    assert (first["workers_sent"], first["workers_applied"]) == (2, 2)
    assert refused["target"] == "absent"
    assert "absent" in refused["message"]
    assert refused["workers_sent"] == 0  # refused by the main process: no worker saw it
    assert certificate_record["target"].startswith(f"127.0.0.1:{https}")

    lines = text_log.read_text().splitlines()
    assert len(lines) == 3
    assert f"uid={os.getuid()} " in lines[0] and f"pid={os.getpid()} " in lines[0]
    assert "verb=add_cluster target=blog result=ok workers=2/2" in lines[0]
    assert "verb=remove_cluster target=absent result=failure workers=0/0" in lines[1]


def test_an_audit_log_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    port = free_port()
    config = configs.document(
        configs.http_listener(port), audit_logs_target="missing-folder/audit.log"
    )
    daemon = DaemonProcess(tmp_path, config)
    with pytest.raises(RuntimeError) as failed:
        daemon.start()
    daemon.kill()
    assert "audit log" in str(failed.value)
    assert str(tmp_path / "missing-folder" / "audit.log") in str(failed.value)
