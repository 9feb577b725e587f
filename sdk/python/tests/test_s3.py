"""S3Manager against an S3-compatible server whose endpoint is BLOCKMESH_TEST_S3_ENDPOINT (test/python-sdk.test.ts
starts s3rver and sets it). Optional: BLOCKMESH_TEST_S3_BUCKET (an existing bucket; otherwise one is created),
BLOCKMESH_TEST_S3_ACCESS_KEY / BLOCKMESH_TEST_S3_SECRET_KEY (default S3RVER / S3RVER, s3rver's)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from aios_model_splitter import S3TransferError
from aios_model_splitter.utils import S3Manager

ENDPOINT = os.environ.get("BLOCKMESH_TEST_S3_ENDPOINT", "")
ACCESS_KEY = os.environ.get("BLOCKMESH_TEST_S3_ACCESS_KEY", "S3RVER")
SECRET_KEY = os.environ.get("BLOCKMESH_TEST_S3_SECRET_KEY", "S3RVER")

pytestmark = pytest.mark.skipif(
    ENDPOINT == "",
    reason="BLOCKMESH_TEST_S3_ENDPOINT is not set: no S3-compatible server to test S3Manager against "
           "(test/python-sdk.test.ts starts s3rver and sets it)",
)


@pytest.fixture(scope="module")
def bucket() -> str:
    name = os.environ.get("BLOCKMESH_TEST_S3_BUCKET", "")
    if name == "":
        name = f"sdk-test-{uuid.uuid4().hex[:12]}"
        S3Manager(ACCESS_KEY, SECRET_KEY, endpoint_url=ENDPOINT).client.create_bucket(Bucket=name)
    return name


def manager() -> S3Manager:
    return S3Manager(ACCESS_KEY, SECRET_KEY, "us-east-1", endpoint_url=ENDPOINT)


# (not an empty object: s3transfer asks for its first chunk with a Range, which S3 refuses with InvalidRange for an
# empty object, a case s3transfer handles; s3rver instead answers 206 with a Content-Length of 1 and no body)
@pytest.mark.parametrize("size", [1234, 9 * 1024 * 1024 + 7], ids=["small", "multipart"])
def test_upload_then_download_round_trip(bucket: str, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    key = f"gpt2/{uuid.uuid4().hex}/model.bin"
    s3 = manager()
    assert s3.upload_file(str(src), bucket, key) is True, s3.last_error
    assert s3.last_error is None
    # the stored object is the file's bytes (no aws-chunked framing stored as data)
    stored = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert stored == data
    dest = tmp_path / "back" / "deeper" / "model.bin"
    assert s3.download_file(bucket, key, str(dest)) is True, s3.last_error
    assert dest.read_bytes() == data


def test_an_empty_file_uploads(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    s3 = manager()
    assert s3.upload_file(str(src), bucket, "empty/e.bin") is True, s3.last_error
    head = s3.client.head_object(Bucket=bucket, Key="empty/e.bin")
    assert head["ContentLength"] == 0


def test_a_failed_upload_to_a_missing_bucket_is_false_with_the_reason(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    missing = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    s3 = manager()
    assert s3.upload_file(str(src), missing, "gpt2/model.bin") is False
    assert s3.last_error is not None
    assert s3.last_error.startswith(f"upload of {src} to s3://{missing}/gpt2/model.bin failed: ")
    assert "NoSuchBucket" in s3.last_error or "does not exist" in s3.last_error
    with pytest.raises(S3TransferError) as info:
        S3Manager(ACCESS_KEY, SECRET_KEY, endpoint_url=ENDPOINT, raise_on_error=True).upload_file(str(src), missing, "k")
    assert (info.value.operation, info.value.bucket, info.value.key) == ("upload", missing, "k")


def test_uploading_a_missing_file_is_false(bucket: str, tmp_path: Path) -> None:
    s3 = manager()
    assert s3.upload_file(str(tmp_path / "nope.bin"), bucket, "k") is False
    assert s3.last_error is not None and "nope.bin" in s3.last_error


def test_downloading_a_missing_key_is_false_and_writes_nothing(bucket: str, tmp_path: Path) -> None:
    s3 = manager()
    dest = tmp_path / "out" / "missing.bin"
    assert s3.download_file(bucket, f"missing/{uuid.uuid4().hex}", str(dest)) is False
    assert s3.last_error is not None and s3.last_error.startswith(f"download of s3://{bucket}/missing/")
    assert not dest.exists()


def test_the_endpoint_can_come_from_aws_endpoint_url_s3(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", ENDPOINT)
    s3 = S3Manager(ACCESS_KEY, SECRET_KEY)  # the seed's constructor, as in its usage example
    assert s3.endpoint_url == ENDPOINT
    src = tmp_path / "m.bin"
    src.write_bytes(b"from the environment")
    assert s3.upload_file(str(src), bucket, "env/m.bin") is True, s3.last_error
    assert s3.download_file(bucket, "env/m.bin", str(tmp_path / "m2.bin")) is True, s3.last_error
    assert (tmp_path / "m2.bin").read_bytes() == b"from the environment"
