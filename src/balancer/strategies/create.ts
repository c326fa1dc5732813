/** Builds the keyless strategy a pool config names (its `balance`, or a hash strategy's `fallback`). */
import type { FallbackStrategy } from '../../config/types.js';
import type { ServerTable } from '../server-table.js';
import { LeastConnections } from './least-connections.js';
import { PowerOfTwoChoices } from './random.js';
import { SmoothWeightedRoundRobin } from './round-robin.js';
import type { PlacementStrategy, RandomSource } from './strategy.js';

export function createPlacementStrategy(name: FallbackStrategy, table: ServerTable, random: RandomSource): PlacementStrategy {
  switch (name) {
    case 'round-robin':
      return new SmoothWeightedRoundRobin(table);
    case 'least-connections':
      return new LeastConnections();
    case 'random':
      return new PowerOfTwoChoices(random);
  }
}

