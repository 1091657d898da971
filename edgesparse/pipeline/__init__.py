"""The build half: load, prune, convert, verify and sweep; the only package that imports TensorFlow.

Every module here imports TensorFlow, tf_keras, TFMOT, Keras 3, scikit-learn
and h5py inside functions (through `tf_env.import_tf`), so importing the
package, and running `edgesparse --help` or the analysis commands, never does.
Modules: build (the pipeline; its option checks in build_checks), models, prune (cluster: sparsity-preserving
weight clustering after pruning), convert (recurrent: GRU/LSTM conversion), mcu_compress (TFLite Micro builds:
overhead stripped, DECODE compression within the profile's RAM, proven in TFLM), sweep, tf_env, demos.
"""

__all__: list[str] = []
