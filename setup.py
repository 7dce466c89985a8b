"""Build script: maps the card's top-level folders into the `naiad` namespace,
generates protobuf modules from protos/, and compiles the native hot path in ext/.

Generated files (protos/*_pb2*.py, ext/*.c) are build outputs and never committed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# Pinned build tools (uvloop's lesson): fail clearly rather than half-build.
CYTHON_RANGE = ((3, 0), (3, 2))
PYBIND11_RANGE = ((2, 12), (3, 0))

# Top-level folder -> package inside the `naiad` namespace; `naiad` itself is api/
# (its __init__ exports the in-process `Server`).
TOP_LEVEL = {
    "naiad": "api",  # the in-process API: `from naiad import Server`
    "naiad.kernel": "kernel",
    "naiad.ext": "ext",
    "naiad.services": "services",
    "naiad.protos": "protos",
    "naiad.backends": "backends",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for pkg, folder in TOP_LEVEL.items():
        package_dir[pkg] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            name = pkg if str(rel) == "." else pkg + "." + ".".join(rel.parts)
            packages.append(name)
    return packages, package_dir


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _check_tool(name: str, version: str, lo: tuple, hi: tuple) -> None:
    v = _version_tuple(version)
    if not (lo <= v < hi):
        sys.exit(f"naiad build: {name} {version} found; need >= {lo} and < {hi}")


# ---------------------------------------------------------------- protobuf --

PROTO_DIR = ROOT / "protos"
# Generated modules register in naiad's own descriptor pool, so that they can live
# in one process with tritonclient's modules, which declare the same `inference.*`
# names in protobuf's default pool.
_POOL_IMPORT = "from naiad.protos._pool import POOL as _naiad_pool"


def _rewrite_generated(path: Path) -> None:
    text = path.read_text()
    text = text.replace("_descriptor_pool.Default()", "_naiad_pool")
    if "_naiad_pool" in text and _POOL_IMPORT not in text:
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool",
            "from google.protobuf import descriptor_pool as _descriptor_pool\n" + _POOL_IMPORT,
        )
    # protoc emits `import x_pb2`; ours live in naiad.protos.
    text = re.sub(r"^import (\w+_pb2) as", r"from naiad.protos import \1 as", text, flags=re.M)
    path.write_text(text)


def generate_protos() -> None:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        return
    newest_src = max(p.stat().st_mtime for p in protos + [Path(__file__)])
    outputs = [PROTO_DIR / (p.stem + "_pb2.py") for p in protos]
    if all(o.exists() and o.stat().st_mtime >= newest_src for o in outputs):
        return
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("naiad build: grpcio-tools is required to generate protos/ (pip install grpcio-tools)")
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={PROTO_DIR}",
        f"--pyi_out={PROTO_DIR}",
        f"--grpc_python_out={PROTO_DIR}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        sys.exit("naiad build: protoc failed on protos/*.proto")
    for out in PROTO_DIR.glob("*_pb2*.py"):
        _rewrite_generated(out)


# ------------------------------------------------------------------ native --

def _native_headers() -> list[str]:
    """The headers the C++ modules share (frontend/, lane/): a change to one rebuilds every
    module (build_ext compares only the sources' times otherwise, and the lane's classes
    must have one layout in every module)."""
    return sorted(str(h.relative_to(ROOT)) for d in ("frontend", "lane") for h in (ROOT / "ext" / d).glob("*.h"))


def _extensions() -> list[Extension]:
    import numpy
    import pybind11
    import Cython
    from Cython.Build import cythonize

    _check_tool("Cython", Cython.__version__, *CYTHON_RANGE)
    _check_tool("pybind11", pybind11.__version__, *PYBIND11_RANGE)

    debug = os.environ.get("NAIAD_DEBUG_BUILD") == "1"
    copt = ["-O0", "-g"] if debug else ["-O3"]
    cython_ext = []
    for pyx in sorted((ROOT / "ext").glob("*.pyx")):
        cython_ext.append(
            Extension(
                f"naiad.ext.{pyx.stem}",
                [str(pyx.relative_to(ROOT))],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=copt,
            )
        )
    directives = {"language_level": 3, "boundscheck": debug, "wraparound": False}
    exts = cythonize(
        cython_ext,
        compiler_directives=directives,
        annotate=os.environ.get("NAIAD_CYTHON_ANNOTATE") == "1",
        quiet=True,
    )
    for cpp in sorted((ROOT / "ext").glob("*.cpp")):
        if cpp.stem in OPTIONAL_NATIVE or cpp.stem in CUDA_NATIVE:
            continue  # built by _optional_extensions() / _cuda_extensions(), below
        exts.append(
            Extension(
                f"naiad.ext.{cpp.stem}",
                [str(cpp.relative_to(ROOT))],
                include_dirs=[pybind11.get_include(), str(ROOT / "ext")],
                depends=_native_headers(),
                language="c++",
                extra_compile_args=copt + ["-std=c++17", "-fvisibility=hidden"],
            )
        )
    return exts + _optional_extensions(copt) + _cuda_extensions(copt)


# ------------------------------------------------------- optional native front ends --
# The data-plane front ends in ext/ (`_native_grpc`, `_native_http`) need system
# libraries (Debian: libgrpc++-dev; node-llhttp for the HTTP one, below).
# Each is built only where its pkg-config packages are found, and as an `optional`
# extension: a failing compile prints a warning and the install goes on. naiad then
# serves that protocol on aiohttp / grpcio and says so in one line at start.

OPTIONAL_NATIVE: dict[str, tuple[str, ...]] = {
    "_native_grpc": ("grpc++",),
    "_native_http": (),
}


# llhttp (the HTTP/1.1 parser of Node.js, aiohttp and httptools) frames `_native_http`'s
# requests. It ships no library or pkg-config file, so its C sources are taken from the system
# at build time and compiled into the extension in strict mode: Debian's node-llhttp
# (/usr/share/llhttp, /usr/share/include/llhttp), or $NAIAD_LLHTTP_DIR laid out as llhttp's
# release (include/llhttp.h, src/*.c; httptools' sdist carries one under vendor/llhttp).

LLHTTP_SOURCES = ("llhttp.c", "api.c", "http.c")
NEEDS_LLHTTP = ("_native_http",)


def _llhttp() -> tuple[list[str], str] | None:
    """(C sources, include dir) of llhttp, or None when it is not installed."""
    roots = [(Path("/usr/share/llhttp"), Path("/usr/share/include/llhttp"))]
    if os.environ.get("NAIAD_LLHTTP_DIR"):
        home = Path(os.environ["NAIAD_LLHTTP_DIR"])
        roots.insert(0, (home / "src", home / "include"))
    for src, include in roots:
        if (include / "llhttp.h").exists() and all((src / name).exists() for name in LLHTTP_SOURCES):
            return [str(src / name) for name in LLHTTP_SOURCES], str(include)
    return None


# RapidJSON (header-only: Debian's rapidjson-dev, or $NAIAD_RAPIDJSON_DIR holding
# rapidjson/document.h) reads the JSON header of the plain infer requests `_native_http`
# hands to native lanes (ext/frontend/http_lane.h). Without it the module builds without
# lanes: every request takes the Python path.

NEEDS_RAPIDJSON = ("_native_http",)


def _rapidjson() -> str | None:
    """The include dir holding rapidjson/document.h, or None when it is not installed."""
    roots = [os.environ.get("NAIAD_RAPIDJSON_DIR"), "/usr/include", "/usr/local/include"]
    for root in filter(None, roots):
        if (Path(root) / "rapidjson" / "document.h").exists():
            return root
    return None


def _pkg_config(packages: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
    """(cflags, libs) of `packages`, or None when pkg-config or a package is missing."""
    if not packages:
        return [], []
    import shutil
    import subprocess

    if shutil.which("pkg-config") is None:
        return None
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", *packages], check=True, capture_output=True, text=True)
        libs = subprocess.run(["pkg-config", "--libs", *packages], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError:
        return None
    return cflags.stdout.split(), libs.stdout.split()


def _optional_extensions(copt: list[str]) -> list[Extension]:
    import pybind11

    if os.environ.get("NAIAD_NO_NATIVE_FRONTENDS") == "1":
        print("naiad build: NAIAD_NO_NATIVE_FRONTENDS=1: native front ends not built", file=sys.stderr)
        return []
    out = []
    for stem, packages in OPTIONAL_NATIVE.items():
        source = ROOT / "ext" / f"{stem}.cpp"
        if not source.exists():
            continue
        flags = _pkg_config(packages)
        if flags is None:
            print(f"naiad build: note: {stem} not built ({' '.join(packages)} not found by pkg-config); "
                  "naiad will serve that protocol on its Python transport", file=sys.stderr)
            continue
        cflags, libs = flags
        include_dirs = [pybind11.get_include(), str(ROOT / "ext")]
        c_sources: list[str] = []
        if stem in NEEDS_LLHTTP:
            llhttp = _llhttp()
            if llhttp is None:
                print(f"naiad build: note: {stem} not built (llhttp not found: install Debian's node-llhttp "
                      "or set NAIAD_LLHTTP_DIR); naiad will serve that protocol on its Python transport",
                      file=sys.stderr)
                continue
            c_sources, llhttp_include = llhttp
            include_dirs.append(llhttp_include)
        macros: list[tuple[str, str | None]] = []
        if stem in NEEDS_RAPIDJSON:
            rapidjson = _rapidjson()
            if rapidjson is None:
                print(f"naiad build: note: {stem} built without native lanes (RapidJSON not found: install "
                      "Debian's rapidjson-dev or set NAIAD_RAPIDJSON_DIR)", file=sys.stderr)
            else:
                include_dirs.append(rapidjson)
                macros.append(("NAIAD_HTTP_LANES", "1"))
        ext = Extension(
            f"naiad.ext.{stem}",
            [str(source.relative_to(ROOT))],
            include_dirs=include_dirs,
            define_macros=macros,
            depends=_native_headers(),
            language="c++",
            extra_compile_args=copt + ["-std=c++17", "-fvisibility=hidden"] + cflags,
            extra_link_args=libs + ["-pthread"],
            optional=True,
        )
        ext.c_sources = c_sources  # type: ignore[attr-defined]  # compiled by BuildExt as C
        ext.c_args = copt  # type: ignore[attr-defined]
        out.append(ext)
    return out


# ------------------------------------------------------- optional CUDA module --
# `_cuda_copy` compiles against the CUDA toolkit's runtime header only (it opens libcudart
# with dlopen at first use, so it imports anywhere and needs no GPU to build). Built where
# the header is found: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda.

CUDA_NATIVE = ("_cuda_copy",)


def _cuda_include() -> str | None:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", "/usr"]
    for root in filter(None, roots):
        if (Path(root) / "include" / "cuda_runtime_api.h").exists():
            return str(Path(root) / "include")
    return None


def _cuda_extensions(copt: list[str]) -> list[Extension]:
    import pybind11

    include = _cuda_include()
    if include is None:
        print("naiad build: note: _cuda_copy not built (no cuda_runtime_api.h; set CUDA_HOME); "
              "the CUDA path uses cuda-python alone", file=sys.stderr)
        return []
    return [
        Extension(
            f"naiad.ext.{stem}",
            [f"ext/{stem}.cpp"],
            include_dirs=[pybind11.get_include(), include],
            language="c++",
            extra_compile_args=copt + ["-std=c++17", "-fvisibility=hidden"],
            extra_link_args=["-ldl"],
            optional=True,
        )
        for stem in CUDA_NATIVE
    ]


class BuildPy(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


class BuildExt(build_ext):
    def run(self) -> None:
        generate_protos()
        super().run()

    def build_extension(self, ext: Extension) -> None:
        # C sources from the system (llhttp) compile as C, strict, and link in as objects.
        c_sources = getattr(ext, "c_sources", None)
        if c_sources:
            objects = self.compiler.compile(
                c_sources, output_dir=self.build_temp, macros=[("LLHTTP_STRICT_MODE", "1")],
                include_dirs=ext.include_dirs, extra_postargs=[*ext.c_args, "-fvisibility=hidden"])
            ext.extra_objects = [*ext.extra_objects, *objects]
        super().build_extension(ext)


packages, package_dir = _packages()

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"naiad.ext": ["*.pyi", "*.pxd", "py.typed"], "naiad.protos": ["*.proto", "*.pyi"],
                  "naiad.services.status": ["*.html"]},
    ext_modules=_extensions(),
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
    zip_safe=False,
)
