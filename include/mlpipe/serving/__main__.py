from mlpipe.serving.app import main

main()
