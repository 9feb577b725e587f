"""S3Manager (seed 002, "Utility Modules"): files to and from Amazon S3 or an S3-compatible store, with boto3."""

from __future__ import annotations

import logging
import os
from typing import Any

from .errors import S3TransferError

__all__ = ["S3Manager", "S3TransferError"]

log = logging.getLogger("aios_model_splitter")


class S3Manager:
    """Uploads and downloads files on S3.

    ``S3Manager(aws_access_key_id, aws_secret_access_key, region_name="us-east-1")`` as in the seed. For an
    S3-compatible store (MinIO, Ceph, s3rver) give ``endpoint_url`` (or set AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL):
    requests then use path-style addressing, and checksums are sent and checked only where an operation requires
    them — botocore >= 1.36 otherwise sends aws-chunked uploads with trailing checksums that not every
    S3-compatible store understands (some store the chunk framing as the object's data).

    ``upload_file`` and ``download_file`` return True or False as in the seed; the reason for a False is in
    ``last_error`` (and logged). With ``raise_on_error=True`` they raise S3TransferError instead of returning False.
    """

    def __init__(self, aws_access_key_id: str, aws_secret_access_key: str, region_name: str = "us-east-1", *,
                 endpoint_url: str | None = None, raise_on_error: bool = False) -> None:
        import boto3
        from botocore.config import Config

        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        config: Config | None = None
        if endpoint is not None:
            config = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
        self.endpoint_url = endpoint
        self.raise_on_error = raise_on_error
        self.last_error: str | None = None
        self.client: Any = boto3.client("s3", aws_access_key_id=aws_access_key_id,
                                        aws_secret_access_key=aws_secret_access_key, region_name=region_name,
                                        endpoint_url=endpoint, config=config)

    def _failed(self, operation: str, bucket_name: str, object_key: str, message: str) -> bool:
        self.last_error = message
        log.error("%s", message)
        if self.raise_on_error:
            raise S3TransferError(message, operation, bucket_name, object_key)
        return False

    def upload_file(self, file_path: str, bucket_name: str, object_key: str) -> bool:
        """Uploads a local file to ``s3://bucket_name/object_key`` (multipart for large files). True on success."""
        self.last_error = None
        try:
            self.client.upload_file(file_path, bucket_name, object_key)
        except Exception as err:  # boto3 raises several unrelated types (ClientError, S3UploadFailedError, OSError...)
            return self._failed("upload", bucket_name, object_key,
                                f"upload of {file_path} to s3://{bucket_name}/{object_key} failed: {err}")
        log.info("uploaded %s to s3://%s/%s", file_path, bucket_name, object_key)
        return True

    def download_file(self, bucket_name: str, object_key: str, destination_path: str) -> bool:
        """Downloads ``s3://bucket_name/object_key`` to ``destination_path``, creating its directory. True on success."""
        self.last_error = None
        try:
            parent = os.path.dirname(os.path.abspath(destination_path))
            os.makedirs(parent, exist_ok=True)
            self.client.download_file(bucket_name, object_key, destination_path)
        except Exception as err:
            return self._failed("download", bucket_name, object_key,
                                f"download of s3://{bucket_name}/{object_key} failed: {err}")
        log.info("downloaded s3://%s/%s to %s", bucket_name, object_key, destination_path)
        return True
