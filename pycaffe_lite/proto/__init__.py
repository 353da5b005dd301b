"""Generated protobuf bindings for Caffe's schema (see proto/caffe.proto)."""
