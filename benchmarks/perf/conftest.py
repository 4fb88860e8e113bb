def pytest_addoption(parser):
    parser.addoption(
        "--naive-stride",
        type=int,
        default=16,
        help="time the naive matrix_rank loop on every k-th split and scale by k (1 = every split; ~10 min at L=1024)",
    )
