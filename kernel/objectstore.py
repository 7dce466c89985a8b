"""Model repositories on object storage (`s3://`, `gs://`, `as://`), as tritonserver names them.

Triton reads cloud repositories in place and downloads a version to a temporary folder when
it loads it (core `filesystem/`). naiad keeps one local mirror per remote repository instead:
`Mirror.sync()` copies the objects whose ETag changed since the last sync and deletes the
files whose objects went away, so the model manager reads a plain folder and poll mode sees
changes through the folder's fingerprint (only changed files get a new mtime). The mirror is
a temporary folder removed at shutdown.

URL forms (Triton 24.04):
  s3://bucket/path, s3://host:port/bucket/path, s3://http(s)://host:port/bucket/path
  gs://bucket/path
  as://account/container/path
Credentials: the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_SESSION_TOKEN, AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT,
AZURE_STORAGE_KEY; and, not in Triton, AZURE_STORAGE_CONNECTION_STRING), or the JSON file named by TRITON_CLOUD_CREDENTIAL_PATH:
  {"s3": {"<path prefix>": {"key_id", "secret_key", "region", "session_token", "profile"}},
   "gs": {"<path prefix>": "<service account file>"},
   "as": {"<path prefix>": {"account_str", "account_key"}}}
where the longest prefix of the repository path picks the entry; no match: the environment.

The clients are fsspec's (s3fs, gcsfs, adlfs), imported only when a cloud path is used, so
the plain install needs none of them (`pip install 'naiad[cloud]'`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMES = ("s3://", "gs://", "as://")
_PACKAGES = {"s3": "s3fs", "gs": "gcsfs", "as": "adlfs"}
# Triton's S3 regex for a path that names its endpoint: s3://[http(s)://]host:port/bucket/path
_S3_ENDPOINT = re.compile(r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(/.*)?")
_AS_PATH = re.compile(r"as://([^/]+)/([^/?]+)(?:/([^?]*))?(\?.*)?")


class ObjectStoreError(Exception):
    """A cloud repository that cannot be read; the text and code are Triton's where it has them."""

    def __init__(self, message: str, code: str = "Internal") -> None:
        super().__init__(message)
        self.code = code


def is_remote(path: str) -> bool:
    return path.startswith(SCHEMES)


@dataclass(frozen=True)
class RemotePath:
    scheme: str  # "s3", "gs", "as"
    root: str  # the path as the fsspec file system names it: bucket/prefix, container/prefix
    endpoint: str = ""  # s3 only: http(s)://host:port
    account: str = ""  # as only


def parse(url: str) -> RemotePath:
    scheme = url[:2]
    rest = url[5:]
    if scheme == "s3":
        m = _S3_ENDPOINT.fullmatch(_clean_s3(url))
        if m:
            protocol, host, port, bucket, obj = m.groups()
            root = bucket + "/" + (obj or "").strip("/")
            return RemotePath("s3", root.rstrip("/"), f"{protocol or 'http://'}{host}:{port}")
        root = "/".join(p for p in rest.split("/") if p)
        if not root:
            raise ObjectStoreError(f"Invalid bucket name: '{rest}'", "Invalid argument")
        return RemotePath("s3", root)
    if scheme == "gs":
        root = "/".join(p for p in rest.split("/") if p)
        if not root:
            raise ObjectStoreError(f"Invalid GCS path {url}", "Invalid argument")
        return RemotePath("gs", root)
    m = _AS_PATH.fullmatch(url)
    if not m:
        raise ObjectStoreError(f"Invalid azure storage path: {url}")
    account, container, blob, _ = m.groups()
    return RemotePath("as", (container + "/" + (blob or "")).rstrip("/"), account=account)


def _clean_s3(url: str) -> str:
    # Triton collapses repeated slashes after the scheme (and after http(s)://) before matching.
    body = url[5:]
    proto = ""
    for p in ("https://", "http://"):
        if body.startswith(p):
            proto, body = p, body[len(p):]
    return "s3://" + proto + re.sub(r"/+", "/", body).strip("/")


def credential(url: str, scheme: str) -> Any:
    """The TRITON_CLOUD_CREDENTIAL_PATH entry for `url` (longest matching prefix), or None."""
    file = os.environ.get("TRITON_CLOUD_CREDENTIAL_PATH")
    if not file:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            creds = json.load(f)
    except (OSError, ValueError) as exc:
        raise ObjectStoreError(f"failed to read the cloud credential file {file}: {exc}") from exc
    entries = creds.get(scheme) or {}
    for prefix in sorted(entries, key=len, reverse=True):
        if url.startswith(prefix):
            return entries[prefix]
    return None


def _filesystem(url: str, where: RemotePath) -> Any:
    package = _PACKAGES[where.scheme]
    try:
        module = __import__(package)
    except ImportError as exc:
        raise ObjectStoreError(f"{where.scheme}:// model repositories need the '{package}' package "
                               f"(pip install 'naiad[cloud]')") from exc
    cred = credential(url, where.scheme)
    if where.scheme == "s3":
        c = cred or {}
        env = os.environ
        key = c.get("key_id") if cred else env.get("AWS_ACCESS_KEY_ID")
        secret = c.get("secret_key") if cred else env.get("AWS_SECRET_ACCESS_KEY")
        token = c.get("session_token") if cred else env.get("AWS_SESSION_TOKEN")
        region = c.get("region") if cred else env.get("AWS_DEFAULT_REGION")
        profile = c.get("profile") if cred else env.get("AWS_PROFILE")
        client: dict[str, Any] = {}
        if where.endpoint:
            client["endpoint_url"] = where.endpoint
        if region:
            client["region_name"] = region
        kwargs: dict[str, Any] = {"client_kwargs": client, "skip_instance_cache": True}
        if key and secret:  # as Triton: a key pair first, then a profile, then the default chain
            kwargs.update(key=key, secret=secret, token=token or None)
        elif profile:
            kwargs["profile"] = profile
        return module.S3FileSystem(**kwargs)
    if where.scheme == "gs":
        token = cred if cred is not None else os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        return module.GCSFileSystem(token=token or None, skip_instance_cache=True)
    c = cred or {}
    account = c.get("account_str") if cred else os.environ.get("AZURE_STORAGE_ACCOUNT")
    key = c.get("account_key") if cred else os.environ.get("AZURE_STORAGE_KEY")
    # Not in Triton: the Azure SDKs' connection string, whose BlobEndpoint can name a local
    # service (Azurite); Triton always talks to https://<account>.blob.core.windows.net.
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        return module.AzureBlobFileSystem(connection_string=connection, skip_instance_cache=True)
    # As Triton: the credentials' account wins over the one in the path.
    name = account or where.account.removesuffix(".blob.core.windows.net")
    return module.AzureBlobFileSystem(account_name=name, account_key=key or None, skip_instance_cache=True)


class Store:
    """The few operations a repository needs from an object store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = parse(url)
        self.fs = _filesystem(url, self.where)

    def check(self) -> None:
        """Fail as Triton does when the bucket (container) cannot be reached."""
        bucket = self.where.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except Exception as exc:  # any client failure: credentials, missing bucket, network
            if self.where.scheme != "s3":  # Triton's words; they carry no detail for these two
                name = "GCS client" if self.where.scheme == "gs" else "Azure filesystem client"
                raise ObjectStoreError(f"Unable to create {name}. Check account credentials.") from exc
            # s3fs turns botocore's error into an OSError; the service's own code is in the cause.
            error = getattr(exc.__cause__, "response", {}).get("Error", {})
            raise ObjectStoreError("Unable to create S3 filesystem client. Check account credentials. "
                                   f"Exception: '{error.get('Code') or type(exc).__name__}' "
                                   f"Message: '{error.get('Message') or exc}'") from exc

    def listing(self) -> dict[str, str]:
        """Every object under the repository: relative path -> change tag (ETag, else size+mtime)."""
        self.fs.invalidate_cache()  # polling must see what changed since the last listing
        root = self.where.root
        try:
            found = self.fs.find(root, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        for path, info in found.items():
            if info.get("type") == "directory" or path.endswith("/"):
                continue
            rel = path[len(root):].lstrip("/")
            if not rel:
                continue
            tag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
            out[rel] = str(tag or f"{info.get('size')}-{info.get('LastModified') or info.get('mtime')}")
        return out

    def get(self, rels: list[str], dest: Path) -> None:
        """Download objects to the same relative paths under `dest` (the async clients batch them)."""
        for rel in rels:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get([f"{self.where.root}/{rel}" for rel in rels], [os.fspath(dest / rel) for rel in rels])


class Mirror:
    """A local copy of one remote repository, refreshed by `sync()`."""

    def __init__(self, url: str, cache_root: Path) -> None:
        self.url = url
        self.store = Store(url)
        self.local = Path(tempfile.mkdtemp(prefix="repo-", dir=cache_root))
        self._tags: dict[str, str] = {}

    def sync(self) -> None:
        listing = self.store.listing()
        changed = [rel for rel, tag in listing.items() if self._tags.get(rel) != tag]
        if changed:
            self.store.get(changed, self.local)
        for rel in set(self._tags) - set(listing):
            (self.local / rel).unlink(missing_ok=True)
            _prune_empty(self.local, (self.local / rel).parent)
        self._tags = listing


def _prune_empty(top: Path, folder: Path) -> None:
    # A model or version whose objects are all gone must disappear from the folder scan.
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


class Mirrors:
    """The mirrors of a server's remote repositories under one cache folder."""

    def __init__(self, paths: list[str]) -> None:
        self.root: Path | None = None
        self.by_url: dict[str, Mirror] = {}
        remote = [p for p in paths if is_remote(p)]
        if remote:
            self.root = Path(tempfile.mkdtemp(prefix="naiad-repository-cache-"))
            try:
                for url in remote:
                    self.by_url[url] = Mirror(url, self.root)
            except BaseException:
                self.close()
                raise

    def local_paths(self, paths: list[str]) -> list[str]:
        return [os.fspath(self.by_url[p].local) if p in self.by_url else p for p in paths]

    def sync(self) -> None:
        for mirror in self.by_url.values():
            mirror.sync()

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
