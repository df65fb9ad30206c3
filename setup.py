"""Maps the top-level folders to prefixed import names (ARCHITECTURE.md: no generic names in site-packages).

stages/ -> kubitect_stages, plugins/ -> kubitect_plugins, conformance/ -> kubitect_conformance.
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "kubitect_core": "kubitect_core",
    "kubitect_stages": "stages",
    "kubitect_plugins": "plugins",
    "kubitect_conformance": "conformance",
}


def _mapped_packages():
    packages, package_dir = [], {}
    for name, folder in FOLDERS.items():
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


_packages, _package_dir = _mapped_packages()
setup(packages=_packages, package_dir=_package_dir)
