"""Build the Cython PKCS#11 core; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """Link without the build interpreter's rpath (pyenv and other --enable-shared Pythons put
    one in LDSHARED): the extension needs no libpython, and a wheel must not search the build
    machine's folders when it dlopens a module by bare name."""

    def build_extensions(self) -> None:
        linker = self.compiler.linker_so
        self.compiler.linker_so = [a for a in linker if not a.startswith("-Wl,-rpath")]
        super().build_extensions()


extensions = [
    Extension(
        "kms_iface._pkcs11",
        ["kms_iface/_pkcs11.pyx"],
        include_dirs=["include"],
        libraries=["dl"],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    )
]

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "embedsignature": True,
            "freethreading_compatible": False,
        },
    ),
)
