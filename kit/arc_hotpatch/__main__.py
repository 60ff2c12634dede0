from arc_hotpatch.cli import main

main()
