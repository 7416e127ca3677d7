"""The code that training and prediction share: faces, shifts, the saved model and its runtimes.

Its prediction side never imports TensorFlow or Keras.
"""
