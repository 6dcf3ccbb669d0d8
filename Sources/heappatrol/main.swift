import HeapPatrolTool

HeapPatrolCommand.main()
