import HeapPatrol
