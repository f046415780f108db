"""riskpipe: one Beam (Python) codebase for payment, chargeback and KYC data.

One distribution so that Beam can ship the code to Flink workers with
``--setup_file ./setup.py``. Exact versions that are known to work together
live in ``constraints.txt``; the ranges here only state what the code needs.
"""

from setuptools import find_packages, setup

BEAM = "apache-beam[aws]==2.73.0"

EXTRAS = {
    "kafka": ["confluent-kafka>=2.6,<3"],
    "aws": ["boto3>=1.34,<2"],
    "gcp": ["google-cloud-dlp>=3.20,<4"],
    "snowflake": ["snowflake-connector-python>=3.12,<5"],
    "vault": ["hvac>=2.1,<3"],
}
EXTRAS["dev"] = sorted(
    {dep for deps in EXTRAS.values() for dep in deps}
    | {
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "hypothesis>=6.100,<7",
        "ruff>=0.6,<1",
        "moto[server]>=5,<6",
    }
)

setup(
    name="riskpipe",
    version="0.1.0",
    description="Secure Beam pipelines for payment, chargeback and KYC data",
    python_requires=">=3.10,<3.13",
    packages=find_packages(
        include=["pipelines*", "transforms*", "io_connectors*", "runners*", "schemas*", "dlp_configs*"]
    ),
    package_data={
        "schemas": ["*/*.avsc"],
        "dlp_configs": ["*.yaml", "deidentify/*.json"],
        "runners": ["profiles.yaml"],
    },
    include_package_data=True,
    install_requires=[
        BEAM,
        "fastavro>=1.9,<2",
        "pyarrow>=14",
        "duckdb>=1.1,<3",
        "orjson>=3.9,<4",
        "pydantic>=2.6,<3",
        "pyyaml>=6,<7",
        "cryptography>=42",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["riskpipe=runners.cli:main"]},
)
