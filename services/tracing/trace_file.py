"""Triton mode's output: traces gathered per setting and saved as JSON arrays
(`server:src/tracer.cc` TraceFile / TraceSetting::WriteTrace).

- log frequency 0: a setting's traces go to `<file>` when it ends (update or shutdown);
  the file is one JSON array, opened at the first save and closed with `]` at the end.
- log frequency K > 0: every K traces go to a new `<file>.<idx>` (idx from 0), and what is
  left when the setting ends too.
- trace count reached and every taken trace written: the traces go to `<file>.<idx>`.

Runs on the writer thread only.
"""

from __future__ import annotations

import logging
from typing import IO, Iterable

from naiad.kernel.inference.trace import Trace

from .records import encode_trace
from .settings import TraceSetting


class TraceFile:
    """One trace file name: the main file and its indexed siblings."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._out: IO[str] | None = None
        self._index = 0

    def save(self, chunks: list[str], to_index: bool) -> None:
        text = ",".join(chunks)
        if to_index:
            path = f"{self.name}.{self._index}"
            self._index += 1
            with open(path, "w", encoding="utf-8") as f:
                f.write("[" + text + "]")
            return
        if self._out is None:
            self._out = open(self.name, "w", encoding="utf-8")
            self._out.write("[")
        else:
            self._out.write(",")
        self._out.write(text)
        self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            self._out.write("]")
            self._out.close()
            self._out = None


class TritonFileSink:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._files: dict[str, TraceFile] = {}

    def _file(self, name: str) -> TraceFile:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = TraceFile(name)
        return f

    def write(self, trace: Trace) -> None:
        setting: TraceSetting = trace.context.setting
        text = encode_trace(trace, setting.timestamps, setting.tensors)
        setting.buffer.append(text)
        if trace.parent_id:  # a child (BLS, ensemble step) travels with its parent's sample
            return
        setting.in_buffer += 1
        setting.collected += 1
        if setting.retired:
            self._flush(setting)
        elif (setting.count == 0 and setting.collected >= setting.created) or (
                setting.log_frequency and setting.in_buffer >= setting.log_frequency):
            self._save(setting, to_index=True)

    def retire(self, setting: TraceSetting) -> None:
        setting.retired = True
        self._flush(setting)

    def _flush(self, setting: TraceSetting) -> None:
        if setting.buffer:
            self._save(setting, to_index=setting.log_frequency != 0)

    def _save(self, setting: TraceSetting, to_index: bool) -> None:
        chunks, setting.buffer, setting.in_buffer = setting.buffer, [], 0
        if not setting.file:
            return
        try:
            self._file(setting.file).save(chunks, to_index)
        except OSError as exc:
            self.log.error("failed writing trace file %s: %s", setting.file, exc)

    def close(self, settings: Iterable[TraceSetting]) -> None:
        for setting in settings:
            self._flush(setting)
        for f in self._files.values():
            try:
                f.close()
            except OSError as exc:
                self.log.error("failed closing trace file %s: %s", f.name, exc)
        self._files.clear()
