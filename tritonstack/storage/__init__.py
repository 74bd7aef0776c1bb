"""Where a model repository lives beyond this machine: locations (`s3://`, `gs://`, ...) and the S3 client."""
