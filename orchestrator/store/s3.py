"""S3 requests that pyarrow's filesystem does not make: conditional PUTs (run/lock.py), the read
of one object in a single GET, and the removal of many objects in one request (store/lines.py's
segments). pyarrow reads an object with a HEAD for its size and then ranged GETs, which can come
from two versions while the driver replaces the file.

    bucket = Bucket(run)
    data = bucket.call("get_object", key)["Body"].read()
"""
from __future__ import annotations

import io
from urllib.parse import parse_qs

from orchestrator.errors import StorageError


class Bucket:
    """The bucket of a run on S3, with the endpoint and region its URI names (`?endpoint_override=`)."""

    def __init__(self, run):
        import boto3

        base, _, query = run.uri.partition("?")
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        endpoint = options.get("endpoint_override")
        if endpoint and "://" not in endpoint:  # pyarrow's form: host:port, with scheme= apart
            endpoint = f"{options.get('scheme', 'https')}://{endpoint}"
        self.run = run
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=options.get("region"))
        self.name = base.partition("://")[2].partition("/")[0]

    def key(self, path: str) -> str:
        """The key of a path of the run's filesystem (`bucket/prefix/...`)."""
        return path.partition("/")[2]

    def delete(self, keys: list[str]) -> None:
        """Delete the objects of these keys that exist: a request for each thousand."""
        for start in range(0, len(keys), 1000):
            self.call("delete_objects", None, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                      "Quiet": True})

    def call(self, method: str, key: str | None, **kwargs):
        """One S3 request (of an object where `key` is not None); None where its condition failed
        (someone else wrote first) or the object does not exist. Any other failure is a StorageError,
        one line: the storage's fault, which stops a run without failing the trial that met it."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            response = getattr(self.client, method)(Bucket=self.name, **({} if key is None else {"Key": key}), **kwargs)
            if method == "get_object":  # its body read here: a connection cut while it comes is one line too
                response["Body"] = io.BytesIO(response["Body"].read())
            return response
        except ClientError as e:
            error = e.response.get("Error", {})
            code, status = error.get("Code", ""), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the condition failed; 409: a concurrent conditional write won; NoSuchKey: gone
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412):
                return None
            if code == "NoSuchBucket":
                raise StorageError(f"{self.run.display()}: no such bucket '{self.name}'") from None
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(f"{self.run.display()}: access denied ({code}: {error.get('Message', '')})") from None
            # Any other error response, after botocore's retries (InternalError, SlowDown, ExpiredToken)
            raise StorageError.at(self.run.display(), f"{code or status} in {e.operation_name}: "
                                                      f"{error.get('Message', '')}", doing="reach it") from None
        except NoCredentialsError:
            raise StorageError(f"{self.run.display()}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID "
                               "and AWS_SECRET_ACCESS_KEY, or run on a node whose instance profile gives them)") from None
        except BotoCoreError as e:  # no route to the endpoint, after botocore's retries
            raise StorageError.at(self.run.display(), str(e), doing="reach it") from None
