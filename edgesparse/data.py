"""Data sets: .npz files, the representative dataset for int8 calibration.

CONTRACT:
    Dataset: x_train, y_train, x_val, y_val (numpy), num_classes (int), source (str),
             labels (list[str] | None)
    load_npz(path) -> Dataset                  # keys x_train, y_train, x_val, y_val; int labels
    check_compatible(dataset, input_shape, num_classes, *, source) -> None   # DataError naming the array
    representative_dataset(x, max_samples=200, seed=0) -> Callable[[], Iterator[list[np.ndarray]]]
"""
