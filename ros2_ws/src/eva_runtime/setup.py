"""ament_python package `eva_runtime`: node executables, the launch file and the parameter file.

The nodes themselves live in the `eva_runtime` Python package (eva_runtime.ros), which must be installed in the
Python that runs ROS 2 (`pip install -e <repository>`); this package only installs thin entry points
(`eva_runtime_nodes`, named so that it cannot shadow the core package) and the share/ files `ros2 launch` needs.

The launch file has one source, the repository's top-level `launch/bimanual.launch.py`; `launch/` here is a
relative symlink to that directory.
"""

from glob import glob

from setuptools import setup

PACKAGE = "eva_runtime"

setup(
    # The distribution gets its own name: "eva_runtime" would collide with the core `eva-runtime` distribution
    # in importlib.metadata (same normalised name), and the core reads its version from there.
    name="eva_runtime_ros",
    version="0.1.0",
    packages=["eva_runtime_nodes"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # Through the `launch` symlink, not a "../../../launch" path: a symlink install (`colcon build
        # --symlink-install`) mirrors every data file's relative path inside its build directory, and a path that
        # climbs out of the package would land outside it. install_data copies the file's content.
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="eva-runtime maintainers",
    maintainer_email="eva-runtime@example.com",
    description="ROS 2 nodes and launch files of the EVA deployment runtime",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = eva_runtime_nodes.policy_node:main",
            "record_node = eva_runtime_nodes.record_node:main",
            "sim_robot_node = eva_runtime_nodes.sim_robot_node:main",
        ],
    },
)
