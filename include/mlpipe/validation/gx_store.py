"""A Great Expectations store backend on :mod:`mlpipe.storage`: GX's
``TupleFilesystemStoreBackend`` for any location the data root may be (a folder or an
fsspec URL), so validation results and Data Docs pages go through the same layer as
partitions, each file written whole. Imported by GX (``module_name``), never at parse time.

``listed`` (optional) is the validation-result keys the backend lists, instead of listing
its folder: GX's site builders list every result on each build, which grows with the
history (see :mod:`mlpipe.validation.data_docs`)."""

from __future__ import annotations

import os
import posixpath

from great_expectations.data_context.store.tuple_store_backend import TupleStoreBackend
from great_expectations.exceptions import InvalidKeyError

from mlpipe.storage import atomic_write, is_remote, location, read_bytes


class LocationStoreBackend(TupleStoreBackend):
    def __init__(self, base_directory: str, filepath_template=None, filepath_prefix=None, filepath_suffix=None,
                 forbidden_substrings=None, fixed_length_key=False, suppress_store_backend_id=True,
                 manually_initialize_store_backend_id: str = "", base_public_path=None, store_name=None,
                 static_ready: bool = False, listed: list | None = None, **_ignored) -> None:
        super().__init__(filepath_template=filepath_template, filepath_prefix=filepath_prefix,
                         filepath_suffix=filepath_suffix, forbidden_substrings=forbidden_substrings,
                         platform_specific_separator=False, fixed_length_key=fixed_length_key,
                         suppress_store_backend_id=True,  # no id file for parallel tasks to race on
                         manually_initialize_store_backend_id=manually_initialize_store_backend_id,
                         base_public_path=base_public_path, store_name=store_name)
        self.base = location(base_directory)
        self.static_ready = static_ready  # the site has this GX version's static assets: skip rewriting them
        # results (no prefix) and their pages ("validations/"): the site's other backends list their folders
        self.listed = listed if filepath_prefix in (None, "validations") else None
        self._config = {k: v for k, v in {
            "base_directory": str(base_directory), "filepath_template": filepath_template,
            "filepath_prefix": filepath_prefix, "filepath_suffix": filepath_suffix,
            "fixed_length_key": fixed_length_key, "base_public_path": base_public_path, "store_name": store_name,
            "static_ready": static_ready, "listed": listed, "module_name": __name__, "class_name": type(self).__name__}.items() if v}

    def _path(self, key):
        return self.base / self._convert_key_to_filepath(key)

    def _get(self, key):
        try:
            return read_bytes(self._path(key)).decode("utf-8").rstrip("\n")
        except FileNotFoundError as exc:
            raise InvalidKeyError(f"no object for key {key} at {self._path(key)}") from exc

    def _get_all(self) -> list:
        return [self._get(key) for key in self.list_keys()]

    def _set(self, key, value, **kwargs):
        key = key if isinstance(key, tuple) else key.to_tuple()
        if self.static_ready and key[:1] == ("static",):  # GX copies its 20 static files on every build
            return str(self._path(key))
        path = self._path(key)
        atomic_write(path, value)
        return str(path)

    def _move(self, source_key, dest_key, **kwargs):
        source = self._path(source_key)
        if not source.exists():
            return False
        atomic_write(self._path(dest_key), read_bytes(source))
        source.unlink()
        return dest_key

    def list_keys(self, prefix: tuple = ()) -> list[tuple]:
        if self.listed is not None:
            return [tuple(k) for k in self.listed if tuple(k[:len(prefix)]) == tuple(prefix)]
        keys = []
        if not prefix and self.filepath_prefix:  # the site's backends share its folder: list only this one's part
            prefix = tuple(self.filepath_prefix.split("/"))
        for name in _files_under(self.base.joinpath(*prefix) if prefix else self.base):
            relative = posixpath.join(*prefix, name) if prefix else name
            if self._is_missing_prefix_or_suffix(self.filepath_prefix, self.filepath_suffix, relative):
                continue
            key = self._convert_filepath_to_key(relative)
            if key and not self.is_ignored_key(key):
                keys.append(key)
        return keys

    def remove_key(self, key):
        path = self._path(key if isinstance(key, tuple) else key.to_tuple())
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def get_url_for_key(self, key, protocol=None) -> str:
        escaped = self._url_path_escape_special_characters(path=self._convert_key_to_filepath(key))
        if is_remote(self.base):
            return str(self.base / escaped)
        return f"{protocol or 'file:'}//{os.path.join(self.base, escaped)}"

    def get_public_url_for_key(self, key, protocol=None):
        return self.base_public_path + self._convert_key_to_filepath(key)

    def _has_key(self, key):
        return self._path(key).exists()

    @property
    def config(self) -> dict:
        return self._config


def _files_under(folder) -> list[str]:
    """Every file below ``folder``, as paths relative to it (``/``-separated)."""
    if is_remote(folder):
        root = folder.path.rstrip("/")
        try:
            return [p[len(root) + 1:] for p in folder.fs.find(root)]
        except FileNotFoundError:
            return []
    found = []
    for parent, _dirs, files in os.walk(folder):
        rel = os.path.relpath(parent, folder)
        found += [name if rel == "." else posixpath.join(*rel.split(os.sep), name) for name in files]
    return found
