"""Build the Cython PKCS#11 core; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

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
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "embedsignature": True,
            "freethreading_compatible": False,
        },
    )
)
